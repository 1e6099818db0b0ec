package mq

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
	"go.uber.org/fx"
)

// Subscription declares a consumer that Module builds and runs: a group,
// its topics and the callback.
type Subscription struct {
	GroupID string
	Topics  []string
	Handler ConsumeCallback
}

var (
	callbackType     = reflect.TypeOf(ConsumeCallback(nil))
	subscriptionType = reflect.TypeOf(Subscription{})
	errorType        = reflect.TypeOf((*error)(nil)).Elem()
)

// AsSubscription declares, in one line, a consumer of topics in group
// groupID that Module starts with the app and stops with it. handler is
// either the callback itself (a ConsumeCallback or a
// func(context.Context, *mq.Message) error) or a constructor of it whose
// parameters fx fills from the graph, returning the callback and optionally
// an error:
//
//	mq.AsSubscription("im-logic-group", []string{"gochat.messages.upstream"},
//		func(store *Store, p mq.Producer) mq.ConsumeCallback { return newHandler(store, p) })
//
// A bad declaration (no group, no topics, a handler of another shape) makes
// the app fail to start.
func AsSubscription(groupID string, topics []string, handler any) fx.Option {
	bad := func(format string, args ...any) fx.Option {
		return fx.Error(fmt.Errorf("mq: AsSubscription(%q, %q): %w: "+format, append([]any{groupID, topics, ErrInvalidArgument}, args...)...))
	}
	if groupID == "" {
		return bad("empty group id")
	}
	if len(topics) == 0 {
		return bad("%v", ErrNoTopics)
	}
	for _, t := range topics {
		if err := checkTopic(t); err != nil {
			return bad("%v", err)
		}
	}
	topics = append([]string(nil), topics...)
	tag := fx.ResultTags(`group:"mq.subscriptions"`)
	switch h := handler.(type) {
	case nil:
		return bad("%v", ErrNilCallback)
	case ConsumeCallback:
		if h == nil {
			return bad("%v", ErrNilCallback)
		}
		return fx.Supply(fx.Annotate(Subscription{GroupID: groupID, Topics: topics, Handler: h}, tag))
	case func(context.Context, *Message) error:
		if h == nil {
			return bad("%v", ErrNilCallback)
		}
		return fx.Supply(fx.Annotate(Subscription{GroupID: groupID, Topics: topics, Handler: h}, tag))
	}

	// A constructor: wrap it into one that returns a Subscription.
	fn := reflect.ValueOf(handler)
	ft := fn.Type()
	if ft.Kind() != reflect.Func || fn.IsNil() || ft.NumOut() == 0 || ft.NumOut() > 2 ||
		!ft.Out(0).ConvertibleTo(callbackType) || ft.Out(0).Kind() != reflect.Func ||
		(ft.NumOut() == 2 && ft.Out(1) != errorType) {
		return bad("handler is a %s; want a ConsumeCallback or a constructor returning one (and optionally an error)", ft)
	}
	in := make([]reflect.Type, ft.NumIn())
	for i := range in {
		in[i] = ft.In(i)
	}
	wrapperType := reflect.FuncOf(in, []reflect.Type{subscriptionType, errorType}, ft.IsVariadic())
	wrapper := reflect.MakeFunc(wrapperType, func(args []reflect.Value) []reflect.Value {
		var out []reflect.Value
		if ft.IsVariadic() {
			out = fn.CallSlice(args)
		} else {
			out = fn.Call(args)
		}
		var err error
		if len(out) == 2 && !out[1].IsNil() {
			err = out[1].Interface().(error)
		}
		sub := Subscription{GroupID: groupID, Topics: topics}
		if err == nil {
			sub.Handler = out[0].Convert(callbackType).Interface().(ConsumeCallback)
			if sub.Handler == nil {
				err = ErrNilCallback
			}
		}
		if err != nil {
			err = fmt.Errorf("mq: subscription %q: handler constructor: %w", groupID, err)
		}
		return []reflect.Value{reflect.ValueOf(sub), errValue(err)}
	})
	return fx.Provide(fx.Annotate(wrapper.Interface(), tag))
}

func errValue(err error) reflect.Value {
	if err == nil {
		return reflect.Zero(errorType)
	}
	return reflect.ValueOf(&err).Elem()
}

// AsOption adds options to the producer and consumers Module builds, for
// example franz-go hooks: mq.AsOption(mq.WithClientOptions(kgo.WithHooks(metrics))).
func AsOption(opts ...Option) fx.Option {
	return fx.Supply(fx.Annotate(Option(func(o *options) {
		for _, opt := range opts {
			if opt != nil {
				opt(o)
			}
		}
	}), fx.ResultTags(`group:"mq.options"`)))
}

// ConsumerFactory builds Consumers for the app's service, for a service
// that drives Subscribe itself. The app's stop closes them (before the
// producer) if the service has not.
type ConsumerFactory struct {
	service string
	opts    []Option
	rt      *fxRuntime
}

// New builds a Consumer of group groupID (see NewConsumer).
func (f *ConsumerFactory) New(ctx context.Context, groupID string) (Consumer, error) {
	c, err := newConsumer(ctx, f.service, groupID, f.opts...)
	if err != nil {
		return nil, err
	}
	f.rt.addConsumer(c)
	return c, nil
}

func moduleOptions(provider coord.Provider, logger clog.Logger, extra []Option) ([]Option, error) {
	if provider == nil {
		return nil, fmt.Errorf("%w: the app has a nil coord.Provider", ErrNoCoordProvider)
	}
	opts := []Option{WithCoordProvider(provider)}
	if logger != nil {
		opts = append(opts, WithLogger(logger))
	}
	return append(opts, extra...), nil
}

func newFxProducer(p ProducerParams) (Producer, error) {
	opts, err := moduleOptions(p.Provider, p.Logger, p.Options)
	if err != nil {
		return nil, err
	}
	prod, err := newProducer(context.Background(), string(p.Service), opts...)
	if err != nil {
		return nil, err
	}
	p.Runtime.addProducer(prod)
	return prod, nil
}

func newConsumerFactory(p ConsumerParams) (*ConsumerFactory, error) {
	opts, err := moduleOptions(p.Provider, p.Logger, p.Options)
	if err != nil {
		return nil, err
	}
	if p.Service == "" {
		return nil, fmt.Errorf("%w: empty mq.ServiceName in the app", ErrInvalidArgument)
	}
	return &ConsumerFactory{service: string(p.Service), opts: opts, rt: p.Runtime}, nil
}

func registerSubscriptions(p SubscriptionParams) error {
	seen := map[string]bool{}
	for _, s := range p.Subscriptions {
		if seen[s.GroupID] {
			return fmt.Errorf("mq: %w: two subscriptions of group %q in one app", ErrInvalidArgument, s.GroupID)
		}
		seen[s.GroupID] = true
	}
	p.Runtime.setSubscriptions(p.Consumers, p.Subscriptions)
	return nil
}

var errUnexpectedStop = errors.New("mq: subscription stopped on its own")

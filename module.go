package mq

import (
	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
	"go.uber.org/fx"
)

// Module provides mq to a go.uber.org/fx app:
//
//   - mq.Producer, built on first use from the service's configuration and
//     closed (flushed) on stop;
//   - *mq.ConsumerFactory, for consumers the service drives itself;
//   - the consumers of every subscription declared with AsSubscription,
//     built and started on start, stopped on stop.
//
// It needs a coord.Provider and the service's ServiceName in the graph,
// and takes a clog.Logger when there is one:
//
//	fx.New(
//		mq.Module,
//		fx.Supply(mq.ServiceName("im-logic")),
//		fx.Supply(fx.Annotate(provider, fx.As(new(coord.Provider)))),
//		mq.AsSubscription("im-logic-group", []string{"gochat.messages.upstream"}, newHandler),
//	)
//
// On stop, consumers stop first (they finish in-flight callbacks, commit
// and leave their groups), then the producer flushes and closes, so that a
// handler that produces can still send while it drains.
var Module = fx.Module("mq",
	fx.Provide(
		fx.Private,
		newRuntime,
	),
	fx.Provide(
		newFxProducer,
		newConsumerFactory,
	),
	fx.Invoke(registerSubscriptions),
)

// ServiceName is the name a service's configuration is read under
// ("{env}/{service}/kafka"). Supply it to the app:
// fx.Supply(mq.ServiceName("im-logic")).
type ServiceName string

// RuntimeParams are what the module's lifecycle needs.
type RuntimeParams struct {
	fx.In

	Lifecycle  fx.Lifecycle
	Shutdowner fx.Shutdowner
	Logger     clog.Logger `optional:"true"`
}

// ProducerParams are the dependencies of the Producer the module provides.
type ProducerParams struct {
	fx.In

	Provider coord.Provider
	Service  ServiceName
	Logger   clog.Logger `optional:"true"`
	// Options are extra options for the module's producer and consumers,
	// supplied with AsOption.
	Options []Option `group:"mq.options"`

	Runtime *fxRuntime
}

// ConsumerParams are the dependencies of the ConsumerFactory the module
// provides.
type ConsumerParams struct {
	fx.In

	Provider coord.Provider
	Service  ServiceName
	Logger   clog.Logger `optional:"true"`
	Options  []Option    `group:"mq.options"`

	Runtime *fxRuntime
}

// SubscriptionParams gather the subscriptions declared with AsSubscription.
type SubscriptionParams struct {
	fx.In

	Subscriptions []Subscription `group:"mq.subscriptions"`
	Consumers     *ConsumerFactory
	Runtime       *fxRuntime
}

package mq

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ceyewan/gochat/im-infra/clog"
	"go.uber.org/fx"
)

// fxRuntime is the module's lifecycle: it starts the subscriptions' Subscribe
// loops on start and stops consumers, then producers, on stop. Its hook is
// registered when it is built, before any producer or consumer of the
// module, so it owns their order.
type fxRuntime struct {
	logger     clog.Logger
	shutdowner fx.Shutdowner

	mu        sync.Mutex
	factory   *ConsumerFactory
	subs      []Subscription
	running   []*runningSubscription
	consumers []*consumer // built by ConsumerFactory.New
	producers []*producer
	stopping  bool
}

// runningSubscription is one Subscribe loop, owned by the runtime: stop
// cancels its ctx through Close, done is closed when the loop returned.
type runningSubscription struct {
	sub      Subscription
	consumer *consumer
	done     chan struct{}
}

func newRuntime(p RuntimeParams) *fxRuntime {
	logger := p.Logger
	if logger == nil {
		logger = clog.Namespace("mq")
	}
	rt := &fxRuntime{logger: logger, shutdowner: p.Shutdowner}
	p.Lifecycle.Append(fx.Hook{OnStart: rt.start, OnStop: rt.stop})
	return rt
}

func (rt *fxRuntime) addProducer(p *producer) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.producers = append(rt.producers, p)
}

func (rt *fxRuntime) addConsumer(c *consumer) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.consumers = append(rt.consumers, c)
}

func (rt *fxRuntime) setSubscriptions(f *ConsumerFactory, subs []Subscription) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.factory, rt.subs = f, subs
}

// start builds every subscription's consumer (a config or connection
// error fails the start) and starts its Subscribe loop in a goroutine with
// its own context, then returns.
func (rt *fxRuntime) start(ctx context.Context) error {
	rt.mu.Lock()
	subs, factory := rt.subs, rt.factory
	rt.mu.Unlock()
	var built []*runningSubscription
	for _, s := range subs {
		c, err := newConsumer(ctx, factory.service, s.GroupID, factory.opts...)
		if err != nil {
			for _, r := range built {
				_ = r.consumer.Close()
			}
			return fmt.Errorf("mq: start subscription %q: %w", s.GroupID, err)
		}
		built = append(built, &runningSubscription{sub: s, consumer: c, done: make(chan struct{})})
	}
	rt.mu.Lock()
	rt.running = built
	rt.mu.Unlock()
	for _, r := range built {
		go rt.run(r)
	}
	return nil
}

// run is a Subscribe loop. One that ends on its own, with an error or not,
// shuts the app down rather than leave it running without its consumer.
func (rt *fxRuntime) run(r *runningSubscription) {
	defer close(r.done)
	err := r.consumer.Subscribe(context.Background(), r.sub.Topics, r.sub.Handler)
	rt.mu.Lock()
	stopping := rt.stopping
	rt.mu.Unlock()
	if stopping {
		return
	}
	if err == nil {
		err = errUnexpectedStop
	}
	rt.logger.Error("mq: subscription failed; shutting the app down",
		clog.String("group", r.sub.GroupID), clog.Strings("topics", r.sub.Topics), clog.Err(err))
	if serr := rt.shutdowner.Shutdown(fx.ExitCode(1)); serr != nil {
		rt.logger.Error("mq: shutdown", clog.Err(serr))
	}
}

// stop stops consumers (they finish in-flight callbacks, commit, leave
// their groups), then flushes and closes producers, within ctx. Its error
// says what was left undone.
func (rt *fxRuntime) stop(ctx context.Context) error {
	rt.mu.Lock()
	rt.stopping = true
	running, consumers, producers := rt.running, rt.consumers, rt.producers
	rt.mu.Unlock()

	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, c := range append(consumersOf(running), consumers...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.shutdown(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, r := range running {
		select {
		case <-r.done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("mq: stop: subscription %q still running: %w", r.sub.GroupID, ctx.Err()))
		}
	}
	for _, p := range producers {
		pctx, cancel := context.WithTimeout(ctx, p.closeTimeout)
		if err := p.shutdown(pctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

func consumersOf(rs []*runningSubscription) []*consumer {
	out := make([]*consumer, len(rs))
	for i, r := range rs {
		out[i] = r.consumer
	}
	return out
}

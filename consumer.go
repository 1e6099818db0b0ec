package mq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// consumer is the Consumer NewConsumer builds. Its franz-go client is made
// by Subscribe, which owns the poll loop and the partition workers; Close
// signals Subscribe and waits for it.
type consumer struct {
	cfg     *config
	groupID string
	logger  clog.Logger
	kopts   []kgo.Opt // client options without the group's

	mu         sync.Mutex
	subscribed bool
	closed     bool
	stop       chan struct{} // closed by Close
	done       chan struct{} // closed when Subscribe has shut down
	closeErr   error         // set before done is closed
	closeOnce  sync.Once
	deadlineMu sync.Mutex
	deadline   context.Context // bounds the shutdown, set by shutdown
}

var _ Consumer = (*consumer)(nil)

// NewConsumer builds a member of the consumer group groupID from the
// configuration of serviceName in the config center (see docs/config.md)
// and checks, within dial_timeout, that a broker answers. It joins the group
// when Subscribe is called.
func NewConsumer(ctx context.Context, serviceName, groupID string, opts ...Option) (Consumer, error) {
	c, err := newConsumer(ctx, serviceName, groupID, opts...)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func newConsumer(ctx context.Context, serviceName, groupID string, opts ...Option) (*consumer, error) {
	if groupID == "" || strings.ContainsAny(groupID, " \t\n") {
		return nil, fmt.Errorf("%w: group id %q (want a non-empty id without spaces)", ErrInvalidArgument, groupID)
	}
	st, err := prepare(ctx, serviceName, opts)
	if err != nil {
		return nil, err
	}
	cfg, o := st.cfg, st.o
	kopts := append(st.kopts, o.clientOpts...)
	// Check the brokers now, so that a bad address fails the constructor.
	cl, err := newClient(st.ctx, cfg, kopts)
	if err != nil {
		return nil, err
	}
	cl.Close()
	logger := o.logger.With(clog.String("group", groupID))
	logger.Info("mq: consumer ready", append(cfg.logFields(), clog.Int("concurrency", cfg.Consumer.Concurrency))...)
	return &consumer{
		cfg:     cfg,
		groupID: groupID,
		logger:  logger,
		kopts:   kopts,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}, nil
}

// Subscribe implements Consumer.
func (c *consumer) Subscribe(ctx context.Context, topics []string, callback ConsumeCallback) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if callback == nil {
		return fmt.Errorf("mq: subscribe: %w", ErrNilCallback)
	}
	if len(topics) == 0 {
		return fmt.Errorf("mq: subscribe: %w", ErrNoTopics)
	}
	seen := make(map[string]bool, len(topics))
	uniq := topics[:0:0]
	for _, t := range topics {
		if err := checkTopic(t); err != nil {
			return fmt.Errorf("mq: subscribe: %w", err)
		}
		if !seen[t] {
			seen[t] = true
			uniq = append(uniq, t)
		}
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return fmt.Errorf("mq: subscribe: %w", ErrClosed)
	case c.subscribed:
		c.mu.Unlock()
		return fmt.Errorf("mq: subscribe: %w", ErrAlreadySubscribed)
	}
	c.subscribed = true
	c.mu.Unlock()

	s := newSession(c, uniq, callback, context.WithoutCancel(ctx))
	opts := append(append([]kgo.Opt(nil), c.kopts...), s.groupOpts()...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		err = fmt.Errorf("mq: subscribe: %w", err)
		c.finish(err)
		return err
	}
	s.cl = cl
	c.logger.Info("mq: subscribed", clog.Strings("topics", uniq))

	runErr := s.poll(ctx, c.stop)
	sctx, cancel := c.shutdownCtx()
	shutdownErr := s.shutdown(sctx)
	cancel()
	c.finish(shutdownErr)
	return runErr
}

// finish records how the shutdown went and releases Close.
func (c *consumer) finish(err error) {
	c.mu.Lock()
	c.closed = true
	c.closeErr = err
	c.mu.Unlock()
	close(c.done)
}

// shutdownCtx bounds the shutdown: the ctx given to shutdown if any, and
// consumer.close_timeout.
func (c *consumer) shutdownCtx() (context.Context, context.CancelFunc) {
	c.deadlineMu.Lock()
	parent := c.deadline
	c.deadlineMu.Unlock()
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, c.cfg.Consumer.CloseTimeout.D())
}

// Close implements Consumer.
func (c *consumer) Close() error {
	return c.shutdown(context.Background())
}

// shutdown stops the consumer like Close, giving up waiting on callbacks
// when ctx ends or at consumer.close_timeout, whichever is first.
func (c *consumer) shutdown(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.deadlineMu.Lock()
		c.deadline = ctx
		c.deadlineMu.Unlock()
		c.mu.Lock()
		subscribed := c.subscribed
		c.closed = true
		c.mu.Unlock()
		close(c.stop)
		if !subscribed {
			return
		}
		<-c.done
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// fatalGroupErr reports errors after which consuming cannot go on: the
// broker refuses who we are or what we ask for.
func fatalGroupErr(err error) bool {
	for _, fatal := range []error{
		kerr.GroupAuthorizationFailed,
		kerr.TopicAuthorizationFailed,
		kerr.ClusterAuthorizationFailed,
		kerr.SaslAuthenticationFailed,
		kerr.InvalidGroupID,
		kerr.InvalidSessionTimeout,
		kerr.UnsupportedVersion,
	} {
		if errors.Is(err, fatal) {
			return true
		}
	}
	return false
}

// waitOrDeadline waits for done until ctx ends.
func waitOrDeadline(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// sinceStart is a small helper for logging durations.
func sinceStart(t time.Time) clog.Field { return clog.Duration("took", time.Since(t)) }

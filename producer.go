package mq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// producer is the Producer NewProducer builds: a franz-go client with a
// bounded buffer and a goroutine that runs Send callbacks.
type producer struct {
	cl           *kgo.Client
	logger       clog.Logger
	maxBytes     int
	closeTimeout time.Duration

	// buffered counts the messages accepted and not yet completed (their
	// callback returned, or SendSync's promise fired), up to limit,
	// producer.max_buffered_records. A sender finding no room waits on
	// room, which release closes and replaces while waiters is non-zero.
	// Every decrement goes through done, which closes drained when the
	// count reaches zero after Close started.
	buffered atomic.Int64
	limit    int64
	waiters  atomic.Int32
	roomMu   sync.Mutex
	room     chan struct{}
	cbs      *callbackRunner
	promise  func(*kgo.Record, error) // p.onProduced, bound once
	// lastTopic is the last topic name checkMessage accepted.
	lastTopic atomic.Pointer[string]

	// closed is set when Close starts. A sender increments buffered
	// before it loads closed, and Close stores closed before it loads
	// buffered, so either the sender sees closed or Close waits for its
	// message (see accept).
	closed      atomic.Bool
	closing     chan struct{} // closed when Close starts: sends waiting for room give up
	drained     chan struct{} // closed when buffered reaches zero after Close started
	drainedOnce sync.Once
	closeOnce   sync.Once
	closeErr    error
}

var _ Producer = (*producer)(nil)

// NewProducer builds a Producer from the configuration of serviceName in
// the config center (see docs/config.md) and checks, within dial_timeout,
// that a broker answers.
func NewProducer(ctx context.Context, serviceName string, opts ...Option) (Producer, error) {
	p, err := newProducer(ctx, serviceName, opts...)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func newProducer(ctx context.Context, serviceName string, opts ...Option) (*producer, error) {
	st, err := prepare(ctx, serviceName, opts)
	if err != nil {
		return nil, err
	}
	cfg, o := st.cfg, st.o
	kopts := append(append(st.kopts, producerOpts(cfg)...), o.clientOpts...)
	cl, err := newClient(st.ctx, cfg, kopts)
	if err != nil {
		return nil, err
	}
	p := &producer{
		cl:           cl,
		logger:       o.logger,
		maxBytes:     cfg.Producer.MaxMessageBytes,
		closeTimeout: cfg.Producer.CloseTimeout.D(),
		limit:        int64(cfg.Producer.MaxBufferedRecords),
		room:         make(chan struct{}),
		closing:      make(chan struct{}),
		drained:      make(chan struct{}),
	}
	p.cbs = newCallbackRunner(o.logger, p.release)
	p.promise = p.onProduced
	o.logger.Info("mq: producer ready", append(cfg.logFields(), clog.String("acks", cfg.Producer.Acks), clog.Bool("idempotent", cfg.Producer.Idempotent))...)
	return p, nil
}

func producerOpts(cfg *config) []kgo.Opt {
	pc := cfg.Producer
	opts := []kgo.Opt{
		kgo.ProducerLinger(pc.Linger.D()),
		kgo.ProducerBatchMaxBytes(int32(pc.BatchMaxBytes)),
		kgo.MaxBufferedRecords(pc.MaxBufferedRecords),
		kgo.RecordDeliveryTimeout(pc.DeliveryTimeout.D()),
		// Client.Close waits up to 1s for a last client-metrics push
		// (KIP-714) before failing what is buffered: with the broker
		// gone, that second comes out of close_timeout's reserve, and
		// Close would return before the failed messages' callbacks ran.
		kgo.DisableClientMetrics(),
	}
	switch pc.Acks {
	case "all":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case "leader":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
	case "none":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
	}
	if !pc.Idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	switch pc.Compression {
	case "none":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	case "gzip":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	case "snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	}
	return opts
}

// Send implements Producer.
func (p *producer) Send(ctx context.Context, msg *Message, callback func(error)) {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := p.check(msg); err != nil {
		p.fail(callback, topicOf(msg), err)
		return
	}
	if err := p.accept(ctx); err != nil {
		p.fail(callback, msg.Topic, err)
		return
	}
	r := &kgo.Record{Context: sendCallback(callback)}
	fillRecord(r, ctx, msg)
	// The record's context is not ctx: once accepted, a message is
	// bounded by the delivery timeout, not by the caller's request. A
	// Send racing with Close may reach franz-go after the client closed:
	// franz-go then fails the record, and its callback gets ErrClosed.
	p.cl.Produce(context.Background(), r, p.promise)
}

// sendCallback is a Send's callback, carried as its record's Context: a
// func value fits in the interface without an allocation, so the record is
// a Send's only allocation, as it is with raw franz-go, and onProduced
// finds the callback without a closure per message, even when a hook
// (kotel) wraps the record's context. (Recycling records through a
// sync.Pool cost more CPU per message than it saved: BENCHMARKS.md,
// finding 8.) Two of these contexts must not be compared with ==: func
// values are not comparable, and nothing in franz-go or its plugins does.
type sendCallback func(error)

type sendCallbackKey struct{}

func (sendCallback) Deadline() (time.Time, bool) { return time.Time{}, false }
func (sendCallback) Done() <-chan struct{}       { return nil }
func (sendCallback) Err() error                  { return nil }
func (c sendCallback) Value(key any) any {
	if key == (sendCallbackKey{}) {
		return c
	}
	return nil
}

// onProduced is the promise of every Send: it queues the record, with its
// callback and outcome, for the callback goroutine. (Were a hook to replace
// the record's context and hide the callback, the outcome would only be
// logged.)
func (p *producer) onProduced(r *kgo.Record, err error) {
	cb, _ := r.Context.Value(sendCallbackKey{}).(sendCallback)
	p.cbs.push(r, cb, err)
}

// check is checkMessage, skipping the topic name's check when it is the
// topic last accepted.
func (p *producer) check(msg *Message) error {
	if msg != nil {
		if last := p.lastTopic.Load(); last != nil && *last == msg.Topic {
			return checkMessageBody(msg, p.maxBytes)
		}
	}
	if err := checkMessage(msg, p.maxBytes); err != nil {
		return err
	}
	topic := msg.Topic
	p.lastTopic.Store(&topic)
	return nil
}

// SendSync implements Producer.
func (p *producer) SendSync(ctx context.Context, msg *Message) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := p.check(msg); err != nil {
		return sendErr(topicOf(msg), err)
	}
	if err := p.accept(ctx); err != nil {
		return sendErr(msg.Topic, err)
	}
	done := make(chan error, 1)
	p.cl.Produce(context.Background(), toRecord(ctx, msg), func(r *kgo.Record, err error) {
		done <- produceErr(r.Topic, err)
		p.release(1)
	})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("mq: send to %s: no acknowledgement before ctx ended, the message may still be delivered: %w", msg.Topic, ctx.Err())
	}
}

// accept takes a slot for one message, waiting for room until ctx ends or
// Close starts.
func (p *producer) accept(ctx context.Context) error {
	// Done, not Err: Err takes the context's mutex, Done is an atomic
	// load once the channel exists.
	if d := ctx.Done(); d != nil {
		select {
		case <-d:
			return fmt.Errorf("ctx ended before the message was accepted: %w", ctx.Err())
		default:
		}
	}
	for {
		n := p.buffered.Add(1)
		// closed is loaded after the increment: see producer.closed.
		if p.closed.Load() {
			p.done(1)
			return ErrClosed
		}
		if n <= p.limit {
			return nil
		}
		p.done(1)
		if err := p.waitRoom(ctx); err != nil {
			return err
		}
	}
}

// waitRoom waits until a slot may have been released.
func (p *producer) waitRoom(ctx context.Context) error {
	p.waiters.Add(1)
	defer p.waiters.Add(-1)
	p.roomMu.Lock()
	room := p.room
	p.roomMu.Unlock()
	if p.buffered.Load() < p.limit { // released before we registered
		return nil
	}
	select {
	case <-room:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("buffer full (producer.max_buffered_records %d) until ctx ended: %w", p.limit, ctx.Err())
	case <-p.closing:
		return ErrClosed
	}
}

// release returns the slots of n completed messages, waking the senders
// waiting for room.
func (p *producer) release(n int) {
	p.done(n)
	if p.waiters.Load() > 0 {
		p.roomMu.Lock()
		close(p.room)
		p.room = make(chan struct{})
		p.roomMu.Unlock()
	}
}

// done takes n from buffered, and closes drained when that leaves nothing
// after Close started.
func (p *producer) done(n int) {
	if p.buffered.Add(-int64(n)) == 0 && p.closed.Load() {
		p.drainedOnce.Do(func() { close(p.drained) })
	}
}

// fail reports an error found before the message was accepted.
func (p *producer) fail(callback func(error), topic string, err error) {
	err = sendErr(topic, err)
	if callback == nil {
		p.logger.Error("mq: send failed", clog.String("topic", topic), clog.Err(err))
		return
	}
	callback(err)
}

func topicOf(msg *Message) string {
	if msg == nil {
		return ""
	}
	return msg.Topic
}

func sendErr(topic string, err error) error {
	if topic == "" {
		return fmt.Errorf("mq: send: %w", err)
	}
	return fmt.Errorf("mq: send to %s: %w", topic, err)
}

// produceErr wraps franz-go's verdict on a record.
func produceErr(topic string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("mq: send to %s: producer closed before delivery: %w: %w", topic, ErrClosed, err)
	default:
		return fmt.Errorf("mq: send to %s: %w", topic, err)
	}
}

// Close implements Producer, within producer.close_timeout.
func (p *producer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.closeTimeout)
	defer cancel()
	return p.shutdown(ctx)
}

// shutdown closes the producer by ctx's deadline: it flushes until a
// reserve of the time is left (a third, at most two seconds), then fails
// what is still buffered with ErrClosed and waits, for the rest of the
// time, for every callback to have run.
func (p *producer) shutdown(ctx context.Context) error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		close(p.closing)
		if p.buffered.Load() == 0 {
			p.drainedOnce.Do(func() { close(p.drained) })
		}

		flushCtx, hard := ctx, ctx
		if d, ok := ctx.Deadline(); ok {
			reserve := min(2*time.Second, time.Until(d)/3)
			var cancel context.CancelFunc
			flushCtx, cancel = context.WithDeadline(ctx, d.Add(-reserve))
			defer cancel()
		} else {
			var cancel context.CancelFunc
			hard, cancel = context.WithTimeout(context.Background(), time.Second)
			defer cancel()
		}
		var errs []error
		if err := p.cl.Flush(flushCtx); err != nil {
			errs = append(errs, fmt.Errorf("mq: close producer: flush: %d messages not delivered in time, failing them: %w",
				p.cl.BufferedProduceRecords(), err))
		}
		p.cl.Close()

		select {
		case <-p.drained:
			p.cbs.close()
		case <-hard.Done():
			// A callback does not return: stop the runner once it does.
			go func() {
				<-p.drained
				p.cbs.close()
			}()
			errs = append(errs, fmt.Errorf("mq: close producer: %d send callbacks still running: %w", p.buffered.Load(), context.DeadlineExceeded))
		}
		p.closeErr = errors.Join(errs...)
		p.logger.Info("mq: producer closed")
	})
	return p.closeErr
}

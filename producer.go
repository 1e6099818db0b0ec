package mq

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

	// slots holds a token per message accepted and not yet completed
	// (its callback returned, or SendSync's promise fired): the buffer
	// limit, producer.max_buffered_records.
	slots chan struct{}
	// inflight counts the same messages, for Close to wait on.
	inflight sync.WaitGroup
	cbs      *callbackRunner

	// mu is held for reading while a message is handed to franz-go, and
	// for writing by Close to stop new sends.
	mu        sync.RWMutex
	closed    bool
	closing   chan struct{} // closed when Close starts: sends waiting for room give up
	closeOnce sync.Once
	closeErr  error
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
		slots:        make(chan struct{}, cfg.Producer.MaxBufferedRecords),
		closing:      make(chan struct{}),
	}
	p.cbs = newCallbackRunner(o.logger, p.release)
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
	if err := checkMessage(msg, p.maxBytes); err != nil {
		p.fail(callback, topicOf(msg), err)
		return
	}
	p.mu.RLock()
	if err := p.accept(ctx); err != nil {
		p.mu.RUnlock()
		p.fail(callback, msg.Topic, err)
		return
	}
	// The record's context is not ctx: once accepted, a message is
	// bounded by the delivery timeout, not by the caller's request.
	p.cl.Produce(context.Background(), toRecord(ctx, msg), func(r *kgo.Record, err error) {
		p.cbs.push(completion{cb: callback, topic: r.Topic, err: produceErr(r.Topic, err)})
	})
	p.mu.RUnlock()
}

// SendSync implements Producer.
func (p *producer) SendSync(ctx context.Context, msg *Message) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := checkMessage(msg, p.maxBytes); err != nil {
		return sendErr(topicOf(msg), err)
	}
	p.mu.RLock()
	if err := p.accept(ctx); err != nil {
		p.mu.RUnlock()
		return sendErr(msg.Topic, err)
	}
	done := make(chan error, 1)
	p.cl.Produce(context.Background(), toRecord(ctx, msg), func(r *kgo.Record, err error) {
		done <- produceErr(r.Topic, err)
		p.release()
	})
	p.mu.RUnlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("mq: send to %s: no acknowledgement before ctx ended, the message may still be delivered: %w", msg.Topic, ctx.Err())
	}
}

// accept takes a slot for one message, waiting for room until ctx ends or
// Close starts. Callers hold p.mu for reading.
func (p *producer) accept(ctx context.Context) error {
	if p.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ctx ended before the message was accepted: %w", err)
	}
	select {
	case p.slots <- struct{}{}:
	default:
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("buffer full (producer.max_buffered_records %d) until ctx ended: %w", cap(p.slots), ctx.Err())
		case <-p.closing:
			return ErrClosed
		}
	}
	p.inflight.Add(1)
	return nil
}

// release returns the slot of a completed message.
func (p *producer) release() {
	<-p.slots
	p.inflight.Done()
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
		close(p.closing)
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()

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

		waited := make(chan struct{})
		go func() {
			p.inflight.Wait()
			close(waited)
		}()
		select {
		case <-waited:
			p.cbs.close()
		case <-hard.Done():
			// A callback does not return: stop the runner once it does.
			go func() {
				<-waited
				p.cbs.close()
			}()
			errs = append(errs, fmt.Errorf("mq: close producer: %d send callbacks still running: %w", len(p.slots), context.DeadlineExceeded))
		}
		p.closeErr = errors.Join(errs...)
		p.logger.Info("mq: producer closed")
	})
	return p.closeErr
}

package mq_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// testTimeout bounds each test's waits; generous because CI machines are slow
// and the same tests run against a real broker.
const testTimeout = 90 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// observed returns a logger whose entries the test can read.
func observed() (clog.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return clog.NewFromZap(zap.New(core)), logs
}

func newProducer(t *testing.T, k *mqtest.Kafka, service string, opts ...mq.Option) mq.Producer {
	t.Helper()
	p, err := mq.NewProducer(testCtx(t), service, append(k.Options(), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newConsumer(t *testing.T, k *mqtest.Kafka, service, group string, opts ...mq.Option) mq.Consumer {
	t.Helper()
	c, err := mq.NewConsumer(testCtx(t), service, group, append(k.Options(), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// subscription runs Subscribe in a goroutine and reports its result.
type subscription struct {
	c    mq.Consumer
	done chan error
}

func subscribe(t *testing.T, c mq.Consumer, topics []string, cb mq.ConsumeCallback) *subscription {
	t.Helper()
	s := &subscription{c: c, done: make(chan error, 1)}
	go func() { s.done <- c.Subscribe(context.Background(), topics, cb) }()
	t.Cleanup(func() {
		_ = c.Close()
		<-s.done
	})
	return s
}

// close closes the consumer and returns what Close and Subscribe returned.
func (s *subscription) close(t *testing.T) {
	t.Helper()
	if err := s.c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("Subscribe returned %v", err)
		}
		s.done <- nil // for the cleanup
	case <-time.After(testTimeout):
		t.Fatal("Subscribe did not return after Close")
	}
}

// eventually polls cond until it holds or the test times out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ledger records what a consumer's callback saw.
type ledger struct {
	mu   sync.Mutex
	seen map[string]int // value -> times seen
	keys map[string][]string
	n    int
}

func newLedger() *ledger { return &ledger{seen: map[string]int{}, keys: map[string][]string{}} }

func (l *ledger) add(msg *mq.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[string(msg.Value)]++
	l.keys[string(msg.Key)] = append(l.keys[string(msg.Key)], string(msg.Value))
	l.n++
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func (l *ledger) unique() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

func (l *ledger) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.seen))
	for k, v := range l.seen {
		out[k] = v
	}
	return out
}

func value(i int) string { return fmt.Sprintf("v%06d", i) }

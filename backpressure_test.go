package mq_test

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fetchCounter counts the records a client reads from fetch responses,
// the same record again when it is fetched twice.
type fetchCounter struct{ n atomic.Int64 }

func (h *fetchCounter) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.n.Add(int64(m.NumRecords))
}

// backpressureTopic is a one-partition topic holding n uncompressed
// messages of about 1 KiB, about n/1000 fetches (1 MiB per partition and
// fetch), and a consumer configuration queueing at most 100 records per
// partition.
func backpressureTopic(t *testing.T, k *mqtest.Kafka, service string, n int) string {
	t.Helper()
	topic := k.NewTopic(t, 1)
	if err := k.SetServiceConfig(service, map[string]any{"consumer": map[string]any{"partition_buffer": 100}}); err != nil {
		t.Fatal(err)
	}
	if err := k.SetServiceConfig("svc-bp-p", map[string]any{"producer": map[string]any{"compression": "none"}}); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, k, "svc-bp-p")
	pad := bytes.Repeat([]byte("x"), 1000)
	var wg sync.WaitGroup
	var failed atomic.Int64
	wg.Add(n)
	for i := range n {
		p.Send(testCtx(t), &mq.Message{Topic: topic, Value: append([]byte(value(i)), pad...)}, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d sends failed", f)
	}
	return topic
}

// inOrder records the messages a callback got and checks that they are
// 0..n-1, each once, in order.
type inOrder struct {
	mu   sync.Mutex
	next int
	bad  string
}

func (o *inOrder) add(m *mq.Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if want := value(o.next); !bytes.HasPrefix(m.Value, []byte(want)) && o.bad == "" {
		o.bad = "got " + string(m.Value[:min(len(m.Value), 7)]) + ", want " + want
	}
	o.next++
}

func (o *inOrder) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.next
}

func (o *inOrder) check(t *testing.T, n int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bad != "" || o.next != n {
		t.Fatalf("%d messages consumed (want %d), order: %s", o.next, n, o.bad)
	}
}

// A partition whose callback does not keep up is paused: while the
// callback is stuck, the consumer stops fetching it (a few fetches, not the
// whole topic), and once the callback goes on, every message arrives once,
// in order.
func TestSlowCallbackPausesItsPartition(t *testing.T) {
	k := mqtest.New(t)
	const n = 20000 // 20 fetches; about 4 are fetched before the pause
	topic := backpressureTopic(t, k, "svc-slow", n)

	fetched := &fetchCounter{}
	c := newConsumer(t, k, "svc-slow", mqtest.UniqueName(t), mq.WithClientOptions(kgo.WithHooks(fetched)))
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	got := &inOrder{}
	s := subscribe(t, c, []string{topic}, func(_ context.Context, m *mq.Message) error {
		once.Do(func() {
			close(entered)
			<-release
		})
		got.add(m)
		return nil
	})
	select {
	case <-entered:
	case <-testCtx(t).Done():
		t.Fatal("no message consumed")
	}
	// What is fetched while the callback is stuck: the first fetches, up
	// to the pause. The window only observes; it synchronises nothing.
	time.Sleep(time.Second)
	f := fetched.n.Load()
	t.Logf("%d of %d records fetched while the callback was stuck", f, n)
	if f > n/3 {
		t.Errorf("%d of %d records fetched while the callback was stuck: the partition was not paused", f, n)
	}
	close(release)
	eventually(t, "every message", func() bool { return got.count() >= n })
	s.close(t)
	got.check(t, n)
}

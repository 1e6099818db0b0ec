package mq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
)

// produceN sends n keyed messages (keys k0..k{keys-1}) with Send, each
// value unique, and waits for every callback.
func produceN(t *testing.T, p mq.Producer, topic string, from, n, keys int) {
	t.Helper()
	ctx := testCtx(t)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := from; i < from+n; i++ {
		wg.Add(1)
		p.Send(ctx, &mq.Message{Topic: topic, Key: []byte("k" + strconv.Itoa(i%keys)), Value: []byte(value(i))}, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d sends failed", failed.Load())
	}
}

func TestTenThousandKeyedMessagesWithHeaders(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 6)
	const n, keys = 10000, 50
	p := newProducer(t, k, "svc-p")

	type sent struct {
		key     string
		headers map[string][]byte
		trace   string
	}
	want := make(map[string]sent, n)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		key := "key-" + strconv.Itoa(i%keys)
		headers := map[string][]byte{"seq": []byte(strconv.Itoa(i)), "bin": {0, 1, 2, byte(i)}}
		trace := ""
		sctx := ctx
		if i%2 == 0 { // half carry a trace id in ctx, half in their headers
			trace = "trace-ctx-" + strconv.Itoa(i)
			sctx = clog.WithTraceID(ctx, trace)
		} else {
			trace = "trace-hdr-" + strconv.Itoa(i)
			headers[mq.TraceIDHeader] = []byte(trace)
			sctx = clog.WithTraceID(ctx, "must-not-override")
		}
		want[value(i)] = sent{key: key, headers: headers, trace: trace}
		msg := &mq.Message{Topic: topic, Key: []byte(key), Value: []byte(value(i)), Headers: headers}
		if i%10 == 0 {
			if err := p.SendSync(sctx, msg); err != nil {
				t.Fatal(err)
			}
			continue
		}
		wg.Add(1)
		p.Send(sctx, msg, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d sends failed", failed.Load())
	}

	var mu sync.Mutex
	var problems []string
	lastSeq := map[string]int{}
	got := newLedger()
	c := newConsumer(t, k, "svc-c", mqtest.UniqueName(t))
	sub := subscribe(t, c, []string{topic}, func(ctx context.Context, msg *mq.Message) error {
		mu.Lock()
		defer mu.Unlock()
		w, ok := want[string(msg.Value)]
		seq, _ := strconv.Atoi(string(msg.Headers["seq"]))
		switch {
		case !ok:
			problems = append(problems, "unknown value "+string(msg.Value))
		case string(msg.Key) != w.key:
			problems = append(problems, fmt.Sprintf("%s: key %q, want %q", msg.Value, msg.Key, w.key))
		case clog.TraceIDFromContext(ctx) != w.trace:
			problems = append(problems, fmt.Sprintf("%s: ctx trace_id %q, want %q", msg.Value, clog.TraceIDFromContext(ctx), w.trace))
		case string(msg.Headers[mq.TraceIDHeader]) != w.trace:
			problems = append(problems, fmt.Sprintf("%s: header trace_id %q, want %q", msg.Value, msg.Headers[mq.TraceIDHeader], w.trace))
		case len(msg.Headers) != len(w.headers)+boolInt(w.trace != "" && w.headers[mq.TraceIDHeader] == nil):
			problems = append(problems, fmt.Sprintf("%s: %d headers", msg.Value, len(msg.Headers)))
		case !bytes.Equal(msg.Headers["bin"], w.headers["bin"]):
			problems = append(problems, fmt.Sprintf("%s: header bin %v", msg.Value, msg.Headers["bin"]))
		}
		if prev, ok := lastSeq[string(msg.Key)]; ok && seq <= prev {
			problems = append(problems, fmt.Sprintf("key %s: seq %d after %d", msg.Key, seq, prev))
		}
		lastSeq[string(msg.Key)] = seq
		got.add(msg)
		return nil
	})
	eventually(t, "10,000 messages", func() bool { return got.count() >= n })
	sub.close(t)

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("%d problems, first: %v", len(problems), problems[:min(5, len(problems))])
	}
	if got.unique() != n || got.count() != n {
		t.Fatalf("received %d messages, %d unique; want %d", got.count(), got.unique(), n)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A graceful Close commits exactly what was processed: a new member of the
// group gets everything else, and nothing twice.
func TestCloseMidStreamThenNewMemberNoLossNoDuplicates(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 6)
	const n = 3000
	produceN(t, newProducer(t, k, "svc-p"), topic, 0, n, 30)
	group := mqtest.UniqueName(t)

	first := newLedger()
	c1 := newConsumer(t, k, "svc-c", group)
	s1 := subscribe(t, c1, []string{topic}, func(ctx context.Context, msg *mq.Message) error {
		time.Sleep(100 * time.Microsecond) // work
		first.add(msg)
		return nil
	})
	eventually(t, "the first member to be midway", func() bool { return first.count() >= n/3 })
	s1.close(t)
	if first.count() >= n {
		t.Fatalf("first member processed all %d before Close; the test needs a mid-stream close", n)
	}

	second := newLedger()
	c2 := newConsumer(t, k, "svc-c", group)
	s2 := subscribe(t, c2, []string{topic}, func(ctx context.Context, msg *mq.Message) error {
		second.add(msg)
		return nil
	})
	eventually(t, "the rest", func() bool { return first.count()+second.count() >= n })
	s2.close(t)

	a, b := first.snapshot(), second.snapshot()
	for v, times := range a {
		if times != 1 || b[v] != 0 {
			t.Errorf("%s: %d times by the first member, %d by the second", v, times, b[v])
		}
	}
	for i := range n {
		if a[value(i)]+b[value(i)] != 1 {
			t.Fatalf("%s delivered %d times in all", value(i), a[value(i)]+b[value(i)])
		}
	}
	t.Logf("first member %d, second %d", first.count(), second.count())
}

// A second member joins while messages flow: partitions move, nothing is
// lost, and each key stays in order within each member's run.
func TestSecondMemberJoinsMidStream(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 6)
	const n = 4000
	p := newProducer(t, k, "svc-p")
	group := mqtest.UniqueName(t)

	all := newLedger()
	handler := func(l *ledger) mq.ConsumeCallback {
		return func(ctx context.Context, msg *mq.Message) error {
			time.Sleep(50 * time.Microsecond)
			l.add(msg)
			all.add(msg)
			return nil
		}
	}
	l1, l2 := newLedger(), newLedger()
	subscribe(t, newConsumer(t, k, "svc-c", group), []string{topic}, handler(l1))
	produceN(t, p, topic, 0, n/2, 40)
	eventually(t, "the first member to start", func() bool { return l1.count() > n/8 })
	subscribe(t, newConsumer(t, k, "svc-c", group), []string{topic}, handler(l2))
	produceN(t, p, topic, n/2, n/2, 40)
	eventually(t, "every message", func() bool { return all.unique() >= n })
	eventually(t, "the second member to get partitions", func() bool { return l2.count() > 0 })

	seen := all.snapshot()
	dups := 0
	for i := range n {
		switch c := seen[value(i)]; {
		case c == 0:
			t.Fatalf("%s lost", value(i))
		case c > 1:
			dups += c - 1
		}
	}
	for _, l := range []*ledger{l1, l2} {
		l.mu.Lock()
		for key, vals := range l.keys {
			for i := 1; i < len(vals); i++ {
				if vals[i] < vals[i-1] && seen[vals[i]] == 1 {
					t.Errorf("key %s out of order in one member: %s after %s", key, vals[i], vals[i-1])
				}
			}
		}
		l.mu.Unlock()
	}
	t.Logf("first member %d, second %d, redelivered %d", l1.count(), l2.count(), dups)
}

// A callback error and a callback panic are logged with the message's
// coordinates, and consumption goes on; both count as processed.
func TestCallbackErrorAndPanicAreLoggedAndConsumptionGoesOn(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 1)
	p := newProducer(t, k, "svc-p")
	ctx := testCtx(t)
	for i, v := range []string{"ok-0", "fail", "ok-1", "panic", "ok-2"} {
		if err := p.SendSync(clog.WithTraceID(ctx, "trace-"+v), &mq.Message{Topic: topic, Key: []byte("k"), Value: []byte(v)}); err != nil {
			t.Fatal(i, err)
		}
	}
	logger, logs := observed()
	group := mqtest.UniqueName(t)
	var handled []string
	var mu sync.Mutex
	c := newConsumer(t, k, "svc-c", group, mq.WithLogger(logger))
	s := subscribe(t, c, []string{topic}, func(ctx context.Context, msg *mq.Message) error {
		mu.Lock()
		handled = append(handled, string(msg.Value))
		mu.Unlock()
		switch string(msg.Value) {
		case "fail":
			return errors.New("boom")
		case "panic":
			panic("kaboom")
		}
		return nil
	})
	eventually(t, "all five", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == 5 })
	s.close(t)

	mu.Lock()
	if fmt.Sprint(handled) != "[ok-0 fail ok-1 panic ok-2]" {
		t.Fatalf("handled %v", handled)
	}
	mu.Unlock()
	tests := []struct {
		give       string
		wantOffset int64
		wantTrace  string
		wantField  string
	}{
		{"mq: callback failed", 1, "trace-fail", "error"},
		{"mq: callback panicked", 3, "trace-panic", "panic"},
	}
	for _, tt := range tests {
		entries := logs.FilterMessage(tt.give).All()
		if len(entries) != 1 {
			t.Fatalf("%q logged %d times", tt.give, len(entries))
		}
		f := entries[0].ContextMap()
		if f["topic"] != topic || f["partition"] != int32(0) || f["offset"] != tt.wantOffset || f["trace_id"] != tt.wantTrace || f[tt.wantField] == nil {
			t.Errorf("%q fields: %v", tt.give, f)
		}
	}
	committed, err := k.Committed(ctx, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	if committed[0] != 5 {
		t.Fatalf("committed %v, want partition 0 at 5", committed)
	}
}

// A callback still running when its partition is revoked sees its ctx
// cancelled; its message is not committed by the old owner and reaches the
// new one.
func TestRevokeCancelsCallbackCtxAndRedelivers(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 2)
	p := newProducer(t, k, "svc-p")
	ctx := testCtx(t)
	group := mqtest.UniqueName(t)
	// One message per partition: the round robin of unkeyed messages is
	// not guaranteed, so key them to their partitions by trying keys.
	for part := range 2 {
		if err := p.SendSync(ctx, &mq.Message{Topic: topic, Key: []byte(keyFor(part)), Value: []byte("slow-" + strconv.Itoa(part))}); err != nil {
			t.Fatal(err)
		}
	}
	started := make(chan string, 2)
	cancelled := make(chan string, 2)
	release := make(chan struct{}) // lets the callback that is not revoked end
	subscribe(t, newConsumer(t, k, "svc-c", group), []string{topic}, func(ctx context.Context, msg *mq.Message) error {
		started <- string(msg.Value)
		select {
		case <-ctx.Done():
			cancelled <- string(msg.Value)
			return ctx.Err()
		case <-release:
			return nil
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the consumer's Close
	for range 2 {
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("the first member never started both callbacks")
		}
	}
	second := newLedger()
	subscribe(t, newConsumer(t, k, "svc-c", group), []string{topic}, func(ctx context.Context, msg *mq.Message) error {
		second.add(msg)
		return nil
	})
	var revoked string
	select {
	case revoked = <-cancelled:
	case <-ctx.Done():
		t.Fatal("no callback saw its ctx cancelled after the second member joined")
	}
	eventually(t, "the second member to get "+revoked, func() bool { return second.snapshot()[revoked] == 1 })
}

// keyFor returns a key that franz-go's default partitioner (murmur2, as
// Kafka's) puts on the given partition of a 2-partition topic.
func keyFor(partition int) string {
	for i := 0; ; i++ {
		k := "key-" + strconv.Itoa(i)
		if int(murmur2([]byte(k))&0x7fffffff)%2 == partition {
			return k
		}
	}
}

// murmur2 is Kafka's key hash.
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

func TestSubscribeBadInput(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 1)
	noop := func(context.Context, *mq.Message) error { return nil }
	tests := []struct {
		name   string
		topics []string
		cb     mq.ConsumeCallback
		want   error
	}{
		{"nil callback", []string{topic}, nil, mq.ErrNilCallback},
		{"no topics", nil, noop, mq.ErrNoTopics},
		{"empty topic list", []string{}, noop, mq.ErrNoTopics},
		{"empty topic name", []string{topic, ""}, noop, mq.ErrEmptyTopic},
		{"invalid topic name", []string{"bad topic!"}, noop, mq.ErrInvalidTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConsumer(t, k, "svc-c", mqtest.UniqueName(t))
			if err := c.Subscribe(testCtx(t), tt.topics, tt.cb); !errors.Is(err, tt.want) {
				t.Fatalf("Subscribe = %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("twice", func(t *testing.T) {
		ctx := testCtx(t)
		if err := newProducer(t, k, "svc-p").SendSync(ctx, &mq.Message{Topic: topic, Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		c := newConsumer(t, k, "svc-c", mqtest.UniqueName(t))
		running := make(chan struct{}, 1)
		subscribe(t, c, []string{topic}, func(context.Context, *mq.Message) error {
			select {
			case running <- struct{}{}:
			default:
			}
			return nil
		})
		select {
		case <-running:
		case <-ctx.Done():
			t.Fatal("the first Subscribe never consumed")
		}
		if err := c.Subscribe(ctx, []string{topic}, noop); !errors.Is(err, mq.ErrAlreadySubscribed) {
			t.Fatalf("second Subscribe = %v, want ErrAlreadySubscribed", err)
		}
	})
	t.Run("after close", func(t *testing.T) {
		c := newConsumer(t, k, "svc-c", mqtest.UniqueName(t))
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Subscribe(testCtx(t), []string{topic}, noop); !errors.Is(err, mq.ErrClosed) {
			t.Fatalf("Subscribe after Close = %v", err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
	})
	t.Run("ctx ends", func(t *testing.T) {
		c := newConsumer(t, k, "svc-c", mqtest.UniqueName(t))
		ctx, cancel := context.WithCancel(testCtx(t))
		done := make(chan error, 1)
		go func() { done <- c.Subscribe(ctx, []string{topic}, noop) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Subscribe after its ctx ended = %v, want nil", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Subscribe did not return after its ctx ended")
		}
	})
}

// A callback may keep the *Message it was given: each one stays its own,
// unchanged by the callbacks after it (Messages are allocated in slabs).
func TestCallbackMayKeepMessage(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 2)
	const n = 1000 // several slabs per partition
	produceN(t, newProducer(t, k, "svc-p"), topic, 0, n, 7)

	var mu sync.Mutex
	var kept []*mq.Message
	c := newConsumer(t, k, "svc-c", mqtest.UniqueName(t))
	s := subscribe(t, c, []string{topic}, func(_ context.Context, msg *mq.Message) error {
		mu.Lock()
		kept = append(kept, msg)
		mu.Unlock()
		return nil
	})
	eventually(t, "every message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(kept) >= n
	})
	s.close(t)

	seen := map[*mq.Message]bool{}
	values := map[string]bool{}
	for _, m := range kept {
		if seen[m] {
			t.Fatalf("the same *Message was passed twice (%s)", m.Value)
		}
		seen[m] = true
		i, err := strconv.Atoi(strings.TrimPrefix(string(m.Value), "v"))
		if err != nil || m.Topic != topic || string(m.Key) != "k"+strconv.Itoa(i%7) {
			t.Fatalf("kept message changed: topic %q key %q value %q", m.Topic, m.Key, m.Value)
		}
		values[string(m.Value)] = true
	}
	if len(kept) != n || len(values) != n {
		t.Fatalf("%d messages kept, %d distinct values; want %d", len(kept), len(values), n)
	}
}

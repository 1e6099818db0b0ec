package mq_test

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestSendBadInput(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 3)
	if err := k.SetServiceConfig("svc-small", map[string]any{"producer": map[string]any{"max_message_bytes": 1024}}); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, k, "svc-small")
	tests := []struct {
		name string
		give *mq.Message
		want error
	}{
		{"nil message", nil, mq.ErrNilMessage},
		{"empty topic", &mq.Message{Value: []byte("x")}, mq.ErrEmptyTopic},
		{"topic with a space", &mq.Message{Topic: "a b", Value: []byte("x")}, mq.ErrInvalidTopic},
		{"topic too long", &mq.Message{Topic: strings.Repeat("t", 250), Value: []byte("x")}, mq.ErrInvalidTopic},
		{"topic dot dot", &mq.Message{Topic: "..", Value: []byte("x")}, mq.ErrInvalidTopic},
		{"value too large", &mq.Message{Topic: topic, Value: make([]byte, 1025)}, mq.ErrMessageTooLarge},
		{"headers too large", &mq.Message{Topic: topic, Headers: headersOfSize(200, 10)}, mq.ErrMessageTooLarge},
		{"empty header key", &mq.Message{Topic: topic, Headers: map[string][]byte{"": []byte("x")}}, mq.ErrInvalidHeader},
		{"header key not UTF-8", &mq.Message{Topic: topic, Headers: map[string][]byte{"\xff\xfe": []byte("x")}}, mq.ErrInvalidHeader},
	}
	ctx := testCtx(t)
	// Accepted messages are interleaved with the bad ones: none is lost.
	var accepted sync.WaitGroup
	var acceptedErrs atomic.Int64
	good := 0
	sendGood := func() {
		accepted.Add(1)
		good++
		p.Send(ctx, &mq.Message{Topic: topic, Key: []byte("k"), Value: []byte(value(good))}, func(err error) {
			if err != nil {
				acceptedErrs.Add(1)
			}
			accepted.Done()
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sendGood()
			if err := p.SendSync(ctx, tt.give); !errors.Is(err, tt.want) {
				t.Errorf("SendSync = %v, want %v", err, tt.want)
			}
			var got error
			calls := 0
			p.Send(ctx, tt.give, func(err error) { got = err; calls++ })
			if calls != 1 || !errors.Is(got, tt.want) { // bad input is reported before Send returns
				t.Errorf("Send callback: %d calls, %v; want one call with %v", calls, got, tt.want)
			}
			sendGood()
		})
	}
	t.Run("nil ctx and nil callback are tolerated", func(t *testing.T) {
		//lint:ignore SA1012 hostile input on purpose
		p.Send(nil, &mq.Message{Topic: topic, Value: []byte("no-callback")}, nil) //nolint:staticcheck // hostile input
	})
	accepted.Wait()
	if acceptedErrs.Load() != 0 {
		t.Fatalf("%d accepted messages failed", acceptedErrs.Load())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := k.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != good+1 {
		t.Fatalf("topic holds %d messages, want the %d accepted ones and the one without callback", len(recs), good)
	}
}

func headersOfSize(n, each int) map[string][]byte {
	h := map[string][]byte{}
	for i := range n {
		h["h"+strconv.Itoa(i)] = make([]byte, each)
	}
	return h
}

func TestSendAfterClose(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 1)
	p := newProducer(t, k, "svc-p")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	ctx := testCtx(t)
	if err := p.SendSync(ctx, &mq.Message{Topic: topic}); !errors.Is(err, mq.ErrClosed) {
		t.Fatalf("SendSync after Close = %v", err)
	}
	var got error
	p.Send(ctx, &mq.Message{Topic: topic}, func(err error) { got = err })
	if !errors.Is(got, mq.ErrClosed) {
		t.Fatalf("Send after Close: %v", got)
	}
}

// Close flushes what is buffered: every callback has run, with nil, and the
// broker holds every message, before Close returns.
func TestCloseFlushesBufferedMessages(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 3)
	if err := k.SetServiceConfig("svc-linger", map[string]any{"producer": map[string]any{"linger": "200ms"}}); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, k, "svc-linger")
	const n = 2000
	var ok, failed atomic.Int64
	ctx := testCtx(t)
	for i := range n {
		p.Send(ctx, &mq.Message{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(value(i))}, func(err error) {
			if err != nil {
				failed.Add(1)
				return
			}
			ok.Add(1)
		})
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if ok.Load() != n || failed.Load() != 0 {
		t.Fatalf("after Close: %d callbacks ok, %d failed; want %d ok", ok.Load(), failed.Load(), n)
	}
	recs, err := k.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Fatalf("broker holds %d, want %d", len(recs), n)
	}
}

// holdProduce makes the in-process broker hold every produce request until
// release is closed.
func holdProduce(t *testing.T, k *mqtest.Kafka) (release func()) {
	t.Helper()
	if k.Real() {
		t.Skip("needs the in-process broker to hold produce requests")
	}
	ch := make(chan struct{})
	var once sync.Once
	k.Cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		k.Cluster.SleepControl(func() { <-ch })
		return nil, nil, false
	})
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return release
}

// With the buffer full, Send and SendSync wait only until their ctx ends.
func TestSendHonoursCtxWhenBufferIsFull(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 1)
	if err := k.SetServiceConfig("svc-tiny", map[string]any{"producer": map[string]any{"max_buffered_records": 2}}); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, k, "svc-tiny")
	release := holdProduce(t, k)
	ctx := testCtx(t)
	results := make(chan error, 2)
	for i := range 2 {
		p.Send(ctx, &mq.Message{Topic: topic, Value: []byte(value(i))}, func(err error) { results <- err })
	}

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	var got error
	p.Send(short, &mq.Message{Topic: topic, Value: []byte("third")}, func(err error) { got = err })
	if !errors.Is(got, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Send with a full buffer: %v after %s", got, time.Since(start))
	}
	short2, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	if err := p.SendSync(short2, &mq.Message{Topic: topic, Value: []byte("fourth")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendSync with a full buffer = %v", err)
	}

	release()
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("held message: %v", err)
		}
	}
	if err := p.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte("after")}); err != nil {
		t.Fatalf("SendSync once room is back: %v", err)
	}
}

// A Send callback that blocks does not stall the producer: other messages
// are still acknowledged.
func TestBlockingCallbackDoesNotStallProducer(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 3)
	p := newProducer(t, k, "svc-p")
	ctx := testCtx(t)
	unblock := make(chan struct{})
	entered := make(chan struct{})
	p.Send(ctx, &mq.Message{Topic: topic, Value: []byte("first")}, func(error) {
		close(entered)
		<-unblock
	})
	<-entered
	for i := range 100 {
		if err := p.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte(value(i))}); err != nil {
			t.Fatal(err)
		}
	}
	close(unblock)
}

// A Send callback that panics is logged with its topic; the callbacks
// queued after it in the same batch still run, each exactly once.
func TestSendCallbackPanicIsLoggedAndTheRestRun(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 1)
	logger, logs := observed()
	p := newProducer(t, k, "svc-p", mq.WithLogger(logger))
	ctx := testCtx(t)

	// The first callback holds the callback goroutine until the other
	// messages are acknowledged, so that their callbacks run as one batch.
	unblock := make(chan struct{})
	const n = 100
	var calls [n]atomic.Int32
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		p.Send(ctx, &mq.Message{Topic: topic, Value: []byte(value(i))}, func(err error) {
			defer wg.Done()
			calls[i].Add(1)
			if err != nil {
				t.Errorf("message %d: %v", i, err)
			}
			if i == 0 {
				<-unblock
			}
			if i%10 == 5 {
				panic("callback " + strconv.Itoa(i))
			}
		})
	}
	// One partition: once this one is acknowledged, so are the n before it.
	if err := p.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte("marker")}); err != nil {
		t.Fatal(err)
	}
	close(unblock)
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-ctx.Done():
		t.Error("not every callback ran")
	}

	for i := range calls {
		if c := calls[i].Load(); c != 1 {
			t.Errorf("callback %d ran %d times", i, c)
		}
	}
	var panics []string
	for _, e := range logs.FilterMessage("mq: send callback panicked").All() {
		f := e.ContextMap()
		if f["topic"] != topic {
			t.Errorf("panic logged with fields %v", f)
		}
		panics = append(panics, f["panic"].(string))
	}
	want := []string{}
	for i := 5; i < n; i += 10 {
		want = append(want, "callback "+strconv.Itoa(i))
	}
	if strings.Join(panics, ",") != strings.Join(want, ",") {
		t.Fatalf("panics logged: %q, want %q", panics, want)
	}
	if err := p.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte("after")}); err != nil {
		t.Fatalf("SendSync after the panics: %v", err)
	}
}

// wrapRecordContext does what kotel's tracing hook does: it replaces each
// buffered record's Context with a child of it.
type wrapRecordContext struct{ wrapped atomic.Int32 }

type wrapKey struct{}

func (h *wrapRecordContext) OnProduceRecordBuffered(r *kgo.Record) {
	r.Context = context.WithValue(r.Context, wrapKey{}, "span")
	h.wrapped.Add(1)
}

// A hook that wraps records' contexts (kotel) does not hide the Send
// callback, which travels as the record's context.
func TestSendCallbackRunsWhenAHookWrapsTheRecordContext(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 3)
	hook := &wrapRecordContext{}
	p := newProducer(t, k, "svc-p", mq.WithClientOptions(kgo.WithHooks(hook)))
	ctx := testCtx(t)

	const n = 50
	var calls [n]atomic.Int32
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		p.Send(ctx, &mq.Message{Topic: topic, Key: []byte(value(i)), Value: []byte(value(i))}, func(err error) {
			defer wg.Done()
			calls[i].Add(1)
			if err != nil {
				t.Errorf("message %d: %v", i, err)
			}
		})
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatal("not every callback ran")
	}
	for i := range calls {
		if c := calls[i].Load(); c != 1 {
			t.Errorf("callback %d ran %d times", i, c)
		}
	}
	if w := hook.wrapped.Load(); w != n {
		t.Errorf("the hook wrapped %d records, want %d", w, n)
	}
	recs, err := k.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Errorf("%d messages on the topic, want %d", len(recs), n)
	}
}

// Close with an unreachable broker returns by its timeout, and every
// buffered message gets its callback with an error.
func TestCloseTimeoutFailsBufferedMessages(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 1)
	if err := k.SetServiceConfig("svc-fast-close", map[string]any{"producer": map[string]any{"close_timeout": "300ms"}}); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, k, "svc-fast-close")
	holdProduce(t, k)
	ctx := testCtx(t)
	const n = 20
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		wg.Add(1)
		p.Send(ctx, &mq.Message{Topic: topic, Value: []byte(value(i))}, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	start := time.Now()
	err := p.Close()
	took := time.Since(start)
	if err == nil || took > 5*time.Second {
		t.Fatalf("Close = %v after %s; want an error within the close timeout", err, took)
	}
	wg.Wait()
	if failed.Load() != n {
		t.Fatalf("%d of %d held messages failed; each must get its callback with an error", failed.Load(), n)
	}
	t.Logf("Close: %v (after %s)", err, took)
}

func TestNewProducerUnreachableBrokers(t *testing.T) {
	k := mqtest.New(t)
	if err := k.SetServiceConfig("svc-nowhere", map[string]any{"brokers": []string{"127.0.0.1:1"}, "dial_timeout": "500ms"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		new  func() error
	}{
		{"producer", func() error { _, err := mq.NewProducer(testCtx(t), "svc-nowhere", k.Options()...); return err }},
		{"consumer", func() error { _, err := mq.NewConsumer(testCtx(t), "svc-nowhere", "g", k.Options()...); return err }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			err := tt.new()
			if !errors.Is(err, mq.ErrBrokersUnreachable) || time.Since(start) > 5*time.Second {
				t.Fatalf("got %v after %s, want ErrBrokersUnreachable within the dial timeout", err, time.Since(start))
			}
			if !strings.Contains(err.Error(), "127.0.0.1:1") {
				t.Fatalf("error does not name the broker: %v", err)
			}
		})
	}
}

// Sends racing with Close: every callback runs exactly once, with nil or
// ErrClosed, Close returns only after the callbacks of the messages it
// accepted ran, and the broker holds exactly the messages whose callback
// got nil, each with its own headers (records are recycled between sends).
func TestSendRacingCloseCallsEveryCallbackOnce(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 3)
	p := newProducer(t, k, "svc-race")
	ctx := testCtx(t)

	// Each sender sends at least perSender messages, then goes on until
	// some Send has failed with ErrClosed (up to maxPer), so that the race
	// happens however fast the machine sends.
	const senders, perSender, maxPer = 8, 1500, 200_000
	const n = senders * perSender
	calls := make([]atomic.Int32, senders*maxPer)
	var sent [senders]int
	var delivered, closedErrs, otherErrs, returned atomic.Int64
	var firstOther atomic.Value
	headersOf := func(i int) map[string][]byte {
		switch i % 3 {
		case 0:
			return nil
		case 1:
			return map[string][]byte{"seq": []byte(strconv.Itoa(i))}
		default:
			return map[string][]byte{"seq": []byte(strconv.Itoa(i)), "a": nil, "z": []byte("last")}
		}
	}
	startClose := make(chan struct{})
	var closeOnce sync.Once
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := 0
			defer func() { sent[s] = j }()
			for ; j < maxPer && (j < perSender || closedErrs.Load() == 0); j++ {
				i := s*maxPer + j
				sctx := ctx
				if i%5 == 0 {
					sctx = clog.WithTraceID(ctx, "t"+strconv.Itoa(i))
				}
				msg := &mq.Message{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(value(i)), Headers: headersOf(i)}
				p.Send(sctx, msg, func(err error) {
					calls[i].Add(1)
					returned.Add(1)
					switch {
					case err == nil:
						delivered.Add(1)
					case errors.Is(err, mq.ErrClosed):
						closedErrs.Add(1)
					default:
						if otherErrs.Add(1) == 1 {
							firstOther.Store(err)
						}
					}
				})
				if returned.Load() > n/4 {
					closeOnce.Do(func() { close(startClose) })
				}
			}
		}()
	}
	<-startClose
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	if otherErrs.Load() > 0 {
		t.Fatalf("%d callbacks got an error other than ErrClosed, first: %v", otherErrs.Load(), firstOther.Load())
	}
	for s := range senders {
		for j := range maxPer {
			want := int32(0)
			if j < sent[s] {
				want = 1
			}
			if c := calls[s*maxPer+j].Load(); c != want {
				t.Fatalf("message %d of sender %d (%d sent): callback ran %d times", j, s, sent[s], c)
			}
		}
	}
	if delivered.Load() == 0 || closedErrs.Load() == 0 {
		t.Fatalf("%d delivered, %d ErrClosed: the race did not happen", delivered.Load(), closedErrs.Load())
	}
	recs, err := k.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(recs)) != delivered.Load() {
		t.Fatalf("broker holds %d messages, %d callbacks got nil", len(recs), delivered.Load())
	}
	for _, r := range recs {
		i, err := strconv.Atoi(string(r.Key))
		if err != nil || string(r.Value) != value(i) {
			t.Fatalf("record key %q value %q", r.Key, r.Value)
		}
		want := map[string]string{}
		for k, v := range headersOf(i) {
			want[k] = string(v)
		}
		if i%5 == 0 {
			want[mq.TraceIDHeader] = "t" + strconv.Itoa(i)
		}
		got := map[string]string{}
		for _, h := range r.Headers {
			got[h.Key] = string(h.Value)
		}
		if len(got) != len(r.Headers) || !maps.Equal(got, want) {
			t.Fatalf("message %d: headers %v, want %v", i, r.Headers, want)
		}
	}
	t.Logf("%d delivered, %d failed with ErrClosed", delivered.Load(), closedErrs.Load())
}

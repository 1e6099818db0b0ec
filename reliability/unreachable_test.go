package reliability

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// slack is what a call may take beyond its deadline on a loaded machine.
const slack = 3 * time.Second

// Scenario 5: the broker stops answering, then goes away. Each case runs
// two ways:
//
//   - "broker" (in-process broker only): the broker itself holds produce
//     requests, or shuts down;
//   - "network" (any broker, real Kafka included): an mqtest.Outage holds
//     or cuts the connections of the clients under test, while the broker
//     serves everyone else.
//
// The cases:
//
//   - "held": produce requests get no answer. With the buffer full, Send
//     waits for room only until its ctx's deadline, then its callback gets
//     the ctx error; SendSync returns at its deadline with an error saying
//     the outcome is unknown; Close returns by its close_timeout and every
//     held message gets its callback with an error.
//   - "closed mid-stream": the broker goes away while a stream of Send and
//     SendSync runs. Every call returns by its deadline; every accepted
//     message gets exactly one callback (nil for those acknowledged before,
//     an error for the rest: none is silently dropped); Close returns by
//     its close_timeout; a consumer's Close returns by its close_timeout.
//   - "callbacks before Close returns": the broker is gone with messages
//     buffered; when Close returns, every one of them has had its callback
//     (a service that exits after Close must not lose them).
func TestBrokerUnreachable(t *testing.T) {
	for _, how := range []string{"broker", "network"} {
		t.Run(how, func(t *testing.T) {
			t.Run("held", func(t *testing.T) { testBrokerHeld(t, how) })
			t.Run("closed mid-stream", func(t *testing.T) { testBrokerClosedMidStream(t, how) })
			t.Run("callbacks before Close returns", func(t *testing.T) { testCallbacksBeforeCloseReturns(t, how) })
		})
	}
}

// outage is how a case takes the broker away from the clients under test.
type outage struct {
	opts []mq.Option // for the clients under test
	hold func()      // produce requests get no answer from now on
	down func()      // the broker is gone
}

// newOutage returns the outage of the given way ("broker" or "network"),
// skipping t where that way cannot run.
func newOutage(t *testing.T, k *mqtest.Kafka, how string) outage {
	if how == "network" {
		o := mqtest.NewOutage()
		return outage{opts: []mq.Option{o.Option()}, hold: o.Hold, down: o.Cut}
	}
	if k.Real() {
		t.Skip("holding or stopping the broker itself needs the in-process broker; the network way runs on this one")
	}
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	return outage{
		hold: func() {
			k.Cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				k.Cluster.KeepControl()
				k.Cluster.SleepControl(func() { <-release })
				return nil, nil, false
			})
		},
		down: k.Cluster.Close,
	}
}

// Minimal test of bug B2: with the broker gone and close_timeout 2s,
// producer Close flushes until 2/3 of its time, then closes the franz-go
// client, which first waits up to 1s for a last client-metrics push to the
// dead broker; the buffered messages fail only after that, and Close's own
// deadline has passed: it returns "send callbacks still running" before the
// callbacks ran.
func testCallbacksBeforeCloseReturns(t *testing.T, how string) {
	k := mqtest.New(t)
	out := newOutage(t, k, how)
	topic := k.NewTopic(t, 3)
	if err := k.SetServiceConfig("gone", map[string]any{"producer": map[string]any{"close_timeout": "2s"}}); err != nil {
		t.Fatal(err)
	}
	p, err := mq.NewProducer(ctxFor(t), "gone", append(k.Options(), out.opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SendSync(ctxFor(t), &mq.Message{Topic: topic, Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	out.down()
	const n = 100
	var calls atomic.Int64
	for range n {
		p.Send(context.Background(), &mq.Message{Topic: topic, Value: []byte("x")}, func(error) { calls.Add(1) })
	}
	began := time.Now()
	err = p.Close()
	atReturn := calls.Load()
	t.Logf("Close after %s: %v", time.Since(began), err)
	if atReturn != n {
		t.Fatalf("Close returned with %d of %d buffered messages' callbacks run", atReturn, n)
	}
}

func testBrokerHeld(t *testing.T, how string) {
	k := mqtest.New(t)
	out := newOutage(t, k, how)
	topic := k.NewTopic(t, 3)
	const closeTimeout = 2 * time.Second
	if err := k.SetServiceConfig("held", map[string]any{"producer": map[string]any{
		"max_buffered_records": 50, "close_timeout": closeTimeout.String(),
	}}); err != nil {
		t.Fatal(err)
	}
	p, err := mq.NewProducer(ctxFor(t), "held", append(k.Options(), out.opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	// One message first, so that the producer knows the topic's leaders and
	// what follows is held in produce requests.
	if err := p.SendSync(ctxFor(t), &mq.Message{Topic: topic, Value: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	out.hold()
	start := time.Now()
	l := newTally()
	var problems []string
	// Fill the buffer: 50 messages are accepted and held.
	for i := range 50 {
		v := id(i)
		l.send()
		p.Send(context.Background(), &mq.Message{Topic: topic, Key: []byte(v), Value: []byte(v)}, func(err error) { l.result(v, err) })
	}
	// Full: Send and SendSync wait for room until their deadline.
	for i, d := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		v := id(1000 + i)
		l.send()
		began := time.Now()
		var got error
		calls := 0
		p.Send(ctx, &mq.Message{Topic: topic, Value: []byte(v)}, func(err error) { got = err; calls++ })
		took := time.Since(began)
		l.result(v, got)
		if calls != 1 || !errors.Is(got, context.DeadlineExceeded) || took > d+slack {
			problems = append(problems, fmt.Sprintf("Send with a full buffer and a %s deadline: %d callbacks, %v, after %s", d, calls, got, took))
		}
		v = id(2000 + i)
		l.send()
		began = time.Now()
		err := p.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte(v)})
		took = time.Since(began)
		l.result(v, err)
		if !errors.Is(err, context.DeadlineExceeded) || took > d+slack || !strings.Contains(err.Error(), topic) {
			problems = append(problems, fmt.Sprintf("SendSync with a full buffer and a %s deadline: %v after %s", d, err, took))
		}
		cancel()
	}
	// Close: by its close_timeout, every held message fails with its callback.
	began := time.Now()
	cerr := p.Close()
	took := time.Since(began)
	if cerr == nil || took > closeTimeout+slack {
		problems = append(problems, fmt.Sprintf("Close with held messages = %v after %s; want an error within %s", cerr, took, closeTimeout))
	}
	l.mu.Lock()
	for i := range 50 {
		v := id(i)
		if l.calls[v] != 1 || l.failed[v] == nil {
			problems = append(problems, fmt.Sprintf("held message %s: %d callbacks, error %v", v, l.calls[v], l.failed[v]))
		}
	}
	l.mu.Unlock()
	sent, acked, failed, _, _, _ := l.figures()
	report(t, "unreachable_held", "broker", brokerKind(k), "way", how, "sent", sent, "acked", acked, "failed_with_callback", failed,
		"silently_dropped", sent-acked-failed, "close_took", took, "close_timeout", closeTimeout, "took", time.Since(start))
	if len(problems) > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(firstN(problems, 20), "\n"))
	}
	t.Logf("Close: %v", cerr)
}

func testBrokerClosedMidStream(t *testing.T, how string) {
	k := mqtest.New(t)
	out := newOutage(t, k, how)
	topic := k.NewTopic(t, 3)
	const closeTimeout = 2 * time.Second
	if err := k.SetServiceConfig("doomed", map[string]any{
		"producer": map[string]any{"max_buffered_records": 500, "close_timeout": closeTimeout.String(), "linger": "5ms"},
		"consumer": map[string]any{"close_timeout": closeTimeout.String()},
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p, err := mq.NewProducer(ctxFor(t), "doomed", append(k.Options(), out.opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	var processed atomic.Int64
	c, err := mq.NewConsumer(ctxFor(t), "doomed", mqtest.UniqueName(t), append(k.Options(), out.opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	subDone := make(chan error, 1)
	go func() {
		subDone <- c.Subscribe(context.Background(), []string{topic}, func(ctx context.Context, msg *mq.Message) error {
			processed.Add(1)
			return nil
		})
	}()
	t.Cleanup(func() { _ = c.Close(); <-subDone })

	l := newTally()
	var problems []string
	var pmu sync.Mutex
	problem := func(format string, args ...any) {
		pmu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		pmu.Unlock()
	}
	var syncCalls, syncLate atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 { // senders: three with Send, one with SendSync
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 4 {
				select {
				case <-stop:
					return
				default:
				}
				v := id(i)
				msg := &mq.Message{Topic: topic, Key: []byte(v), Value: []byte(v)}
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				began := time.Now()
				l.send()
				if w == 3 {
					err := p.SendSync(ctx, msg)
					l.result(v, err)
					syncCalls.Add(1)
					if took := time.Since(began); took > 300*time.Millisecond+slack {
						syncLate.Add(1)
						problem("SendSync returned %s after its 300ms deadline: %v", took, err)
					}
				} else {
					p.Send(ctx, msg, func(err error) { l.result(v, err) })
					if took := time.Since(began); took > 300*time.Millisecond+slack {
						problem("Send returned %s after its 300ms deadline", took)
					}
				}
				cancel()
				time.Sleep(200 * time.Microsecond) // pace the stream
			}
		}()
	}
	waitFor(t, waitLong, "some messages acknowledged and consumed", func() bool { return l.ackedN() > 500 && processed.Load() > 100 })
	ackedBefore := l.ackedN()
	out.down() // mid-stream
	closedAt := time.Now()
	time.Sleep(time.Second) // the stream runs on against the dead broker
	close(stop)
	wg.Wait()

	began := time.Now()
	cerr := p.Close()
	pTook := time.Since(began)
	if pTook > closeTimeout+slack {
		problem("producer Close took %s, close_timeout %s", pTook, closeTimeout)
	}
	began = time.Now()
	ccerr := c.Close()
	cTook := time.Since(began)
	if cTook > closeTimeout+slack {
		problem("consumer Close took %s, close_timeout %s", cTook, closeTimeout)
	}
	select {
	case err := <-subDone:
		subDone <- err
	case <-time.After(slack):
		problem("Subscribe did not return after Close")
	}

	// Every accepted message got exactly one callback.
	sent, acked, failed, _, _, _ := l.figures()
	l.mu.Lock()
	multi, none := 0, 0
	for _, n := range l.calls {
		if n > 1 {
			multi++
		}
	}
	none = sent - len(l.calls)
	var sample []string
	for v, err := range l.failed {
		if len(sample) < 3 {
			sample = append(sample, v+": "+err.Error())
		}
	}
	l.mu.Unlock()
	if multi > 0 || none > 0 {
		problem("%d messages got more than one callback, %d none", multi, none)
	}
	report(t, "unreachable_closed", "broker", brokerKind(k), "way", how, "sent", sent, "acked", acked, "acked_before_close", ackedBefore,
		"failed_with_callback", failed, "silently_dropped", none, "sync_calls", syncCalls.Load(), "late_returns", syncLate.Load(),
		"producer_close_took", pTook, "consumer_close_took", cTook, "close_timeout", closeTimeout,
		"stream_after_close", time.Since(closedAt), "took", time.Since(start))
	t.Logf("producer Close: %v; consumer Close: %v; failures e.g. %v", cerr, ccerr, sample)
	if failed == 0 {
		t.Errorf("no send failed after the broker was shut down mid-stream")
	}
	pmu.Lock()
	defer pmu.Unlock()
	if len(problems) > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(firstN(problems, 20), "\n"))
	}
}

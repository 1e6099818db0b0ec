package fxtest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/coord"
	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

const timeout = 90 * time.Second

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func value(i int) string { return "v" + strconv.Itoa(i) }

// set is a concurrency-safe multiset of message values.
type set struct {
	mu sync.Mutex
	m  map[string]int
}

func newSet() *set { return &set{m: map[string]int{}} }
func (s *set) add(v string) {
	s.mu.Lock()
	s.m[v]++
	s.mu.Unlock()
}
func (s *set) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
func (s *set) get(v string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[v]
}

func produce(t *testing.T, k *mqtest.Kafka, topic string, from, n int) {
	t.Helper()
	p, err := mq.NewProducer(ctxFor(t), "feeder", k.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := from; i < from+n; i++ {
		if err := p.SendSync(ctxFor(t), &mq.Message{Topic: topic, Key: []byte("k" + strconv.Itoa(i%20)), Value: []byte(value(i))}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStartProduceReceiveStop(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 3)
	got := newSet()
	var producer mq.Producer
	app := fxtest.New(t,
		k.FxOptions(),
		fx.Supply(mq.ServiceName("svc")),
		mq.Module,
		mq.AsSubscription(mqtest.UniqueName(t), []string{topic}, func(ctx context.Context, msg *mq.Message) error {
			got.add(string(msg.Value))
			return nil
		}),
		fx.Populate(&producer),
	)
	app.RequireStart()
	const n = 500
	for i := range n {
		if err := producer.SendSync(ctxFor(t), &mq.Message{Topic: topic, Value: []byte(value(i))}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every message", func() bool { return got.len() == n })
	app.RequireStop()
	if err := producer.SendSync(ctxFor(t), &mq.Message{Topic: topic}); !errors.Is(err, mq.ErrClosed) {
		t.Fatalf("SendSync after stop = %v, want ErrClosed", err)
	}
}

// A handler constructor takes its dependencies from the graph, and several
// subscriptions run side by side.
func TestHandlerConstructorsAndSeveralSubscriptions(t *testing.T) {
	k := mqtest.New(t)
	topicA, topicB := k.NewTopic(t, 2), k.NewTopic(t, 2)
	type store struct{ *set }
	st := store{newSet()}
	app := fxtest.New(t,
		k.FxOptions(),
		fx.Supply(mq.ServiceName("svc"), st),
		mq.Module,
		mq.AsSubscription(mqtest.UniqueName(t)+"-a", []string{topicA}, func(s store) mq.ConsumeCallback {
			return func(ctx context.Context, msg *mq.Message) error { s.add("a:" + string(msg.Value)); return nil }
		}),
		mq.AsSubscription(mqtest.UniqueName(t)+"-b", []string{topicB}, func(s store) (func(context.Context, *mq.Message) error, error) {
			return func(ctx context.Context, msg *mq.Message) error { s.add("b:" + string(msg.Value)); return nil }, nil
		}),
	)
	app.RequireStart()
	produce(t, k, topicA, 0, 50)
	produce(t, k, topicB, 0, 50)
	waitFor(t, "both subscriptions", func() bool { return st.len() == 100 })
	app.RequireStop()
}

// Stop while handlers are mid-flight: they finish and are committed; a new
// app in the same group gets none of them again and everything else.
func TestStopMidFlightThenNewAppResumes(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 4)
	const n = 400
	produce(t, k, topic, 0, n)
	group := mqtest.UniqueName(t)

	first := newSet()
	inFlight := make(chan struct{}, 1)
	var finishedAfterStop atomic.Int64
	var stopping atomic.Bool
	app1 := fxtest.New(t, k.FxOptions(), fx.Supply(mq.ServiceName("svc")), mq.Module,
		mq.AsSubscription(group, []string{topic}, func(ctx context.Context, msg *mq.Message) error {
			select {
			case inFlight <- struct{}{}:
			default:
			}
			time.Sleep(2 * time.Millisecond) // work
			if stopping.Load() {
				finishedAfterStop.Add(1)
			}
			first.add(string(msg.Value))
			return nil
		}))
	app1.RequireStart()
	waitFor(t, "a quarter processed", func() bool { return first.len() >= n/4 })
	<-inFlight
	stopping.Store(true)
	app1.RequireStop()
	if first.len() >= n {
		t.Fatal("the first app processed everything before stop; the test needs a mid-flight stop")
	}
	t.Logf("first app: %d processed, %d finished during stop", first.len(), finishedAfterStop.Load())

	second := newSet()
	app2 := fxtest.New(t, k.FxOptions(), fx.Supply(mq.ServiceName("svc")), mq.Module,
		mq.AsSubscription(group, []string{topic}, func(ctx context.Context, msg *mq.Message) error {
			second.add(string(msg.Value))
			return nil
		}))
	app2.RequireStart()
	waitFor(t, "the rest", func() bool { return first.len()+second.len() >= n })
	app2.RequireStop()
	for i := range n {
		if c := first.get(value(i)) + second.get(value(i)); c != 1 {
			t.Fatalf("%s delivered %d times (first app %d, second %d)", value(i), c, first.get(value(i)), second.get(value(i)))
		}
	}
}

// A stop ctx that expires while a handler does not return: OnStop returns
// by the deadline with an error that names what was left.
func TestStopDeadlineReportsWhatWasLeft(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 1)
	produce(t, k, topic, 0, 1)
	entered := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	app := fxtest.New(t, k.FxOptions(), fx.Supply(mq.ServiceName("svc")), mq.Module,
		mq.AsSubscription(mqtest.UniqueName(t), []string{topic}, func(ctx context.Context, msg *mq.Message) error {
			close(entered)
			<-release // ignores ctx: a stuck handler
			return nil
		}))
	app.RequireStart()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := app.Stop(ctx)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), topic+"/0") {
		t.Fatalf("Stop = %v; want an error naming %s/0", err, topic)
	}
	if took > 3*time.Second {
		t.Fatalf("Stop took %s with a 500ms deadline", took)
	}
	t.Logf("Stop after %s: %v", took, err)
}

// A handler that produces while the app stops loses nothing: consumers
// stop before the producer.
func TestHandlerProducesDuringStop(t *testing.T) {
	k := mqtest.New(t)
	in, out := k.NewTopic(t, 2), k.NewTopic(t, 2)
	const n = 300
	produce(t, k, in, 0, n)
	handled := newSet()
	app := fxtest.New(t, k.FxOptions(), fx.Supply(mq.ServiceName("svc")), mq.Module,
		mq.AsSubscription(mqtest.UniqueName(t), []string{in}, func(p mq.Producer) mq.ConsumeCallback {
			return func(ctx context.Context, msg *mq.Message) error {
				time.Sleep(time.Millisecond)
				if err := p.SendSync(ctx, &mq.Message{Topic: out, Value: msg.Value}); err != nil {
					return err
				}
				handled.add(string(msg.Value))
				return nil
			}
		}))
	app.RequireStart()
	waitFor(t, "some handled", func() bool { return handled.len() > 20 })
	app.RequireStop()
	recs, err := k.ReadAll(ctxFor(t), out)
	if err != nil {
		t.Fatal(err)
	}
	forwarded := map[string]bool{}
	for _, r := range recs {
		forwarded[string(r.Value)] = true
	}
	handled.mu.Lock()
	defer handled.mu.Unlock()
	for v := range handled.m {
		if !forwarded[v] {
			t.Fatalf("%s handled but its forward is not on %s", v, out)
		}
	}
	t.Logf("%d handled and forwarded before stop", len(handled.m))
}

func TestBadWiringFailsStart(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 1)
	noop := func(context.Context, *mq.Message) error { return nil }
	bad := coord.NewMemoryProvider()
	defer bad.Close()
	if err := bad.Config().Set(context.Background(), "dev/global/kafka", `{"brokers": [], "producer": {"acks": "most"}}`); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts []fx.Option
		want error
	}{
		{"no coord provider", []fx.Option{fx.Supply(mq.ServiceName("svc")), mq.Module, mq.AsSubscription("g", []string{topic}, noop)}, nil},
		{"no service name", []fx.Option{k.FxOptions(), mq.Module, mq.AsSubscription("g", []string{topic}, noop)}, nil},
		{"invalid config", []fx.Option{fx.Supply(fx.Annotate(bad, fx.As(new(coord.Provider)))), fx.Supply(mq.ServiceName("svc")), mq.Module,
			mq.AsSubscription("g", []string{topic}, noop)}, mq.ErrInvalidConfig},
		{"subscription without topics", []fx.Option{k.FxOptions(), fx.Supply(mq.ServiceName("svc")), mq.Module, mq.AsSubscription("g", nil, noop)}, mq.ErrNoTopics},
		{"nil handler", []fx.Option{k.FxOptions(), fx.Supply(mq.ServiceName("svc")), mq.Module, mq.AsSubscription("g", []string{topic}, nil)}, mq.ErrNilCallback},
		{"handler of a wrong shape", []fx.Option{k.FxOptions(), fx.Supply(mq.ServiceName("svc")), mq.Module, mq.AsSubscription("g", []string{topic}, 42)}, mq.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := fx.New(append(tt.opts, fx.NopLogger)...)
			err := app.Err()
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				err = app.Start(ctx)
				_ = app.Stop(ctx)
			}
			if err == nil {
				t.Fatal("the app started")
			}
			if tt.want != nil && !errors.Is(err, tt.want) && !strings.Contains(err.Error(), tt.want.Error()) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			t.Logf("%v", err)
		})
	}
}

// A Subscribe loop that fails at run time shuts the app down.
func TestSubscriptionFailureShutsAppDown(t *testing.T) {
	k := mqtest.New(t)
	if k.Real() {
		t.Skip("needs the in-process broker to inject a group authorization failure")
	}
	topic := k.NewTopic(t, 1)
	k.Cluster.ControlKey(11 /* JoinGroup */, func(req kmsgRequest) (kmsgResponse, error, bool) {
		k.Cluster.KeepControl()
		return joinGroupAuthFailed(req), nil, true
	})
	var shutdowner fx.Shutdowner
	app := fxtest.New(t, k.FxOptions(), fx.Supply(mq.ServiceName("svc")), mq.Module,
		mq.AsSubscription(mqtest.UniqueName(t), []string{topic}, func(context.Context, *mq.Message) error { return nil }),
		fx.Populate(&shutdowner))
	app.RequireStart()
	select {
	case sig := <-app.Wait():
		if sig.ExitCode != 1 {
			t.Fatalf("exit code %d, want 1", sig.ExitCode)
		}
	case <-time.After(timeout):
		t.Fatal("the app kept running after its subscription failed")
	}
	app.RequireStop()
}

package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// Scenario 3: a consumer is stopped gracefully while messages flow and its
// callbacks are busy (Close, or fx's OnStop), then a new one starts in the
// same group; again and again. Graceful means exact: every in-flight
// callback finishes, its offset is committed before the member leaves, so
// lost = 0 and duplicates = 0.
func TestGracefulStopUnderLoad(t *testing.T) {
	t.Run("Close", func(t *testing.T) { testGracefulStop(t, false) })
	t.Run("FxStop", func(t *testing.T) { testGracefulStop(t, true) })
}

func testGracefulStop(t *testing.T, viaFx bool) {
	k := mqtest.New(t)
	n := pick(4000, 15000, 200000)
	flow := time.Duration(pick(5, 15, 300)) * time.Second
	restarts := pick(4, 8, 40)
	const partitions, keys = 6, 60
	seed := seedFromEnv(t)
	rng := rand.New(rand.NewPCG(uint64(seed), 3))
	topic := k.NewTopic(t, partitions)
	group := mqtest.UniqueName(t)
	scenario := "graceful_close"
	if viaFx {
		scenario = "graceful_fx"
	}
	start := time.Now()

	l := newTally()
	var inflight atomic.Int64
	handler := func(ctx context.Context, msg *mq.Message) error {
		inflight.Add(1)
		defer inflight.Add(-1)
		time.Sleep(2 * time.Millisecond) // busy callbacks: some are in flight at most stops
		l.process(string(msg.Value))
		return nil
	}
	busyStops := 0 // stops that began with callbacks in flight
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		stream(ctxForFlow(t, flow), newProducer(t, k, "graceful-feeder"), topic, 0, n, keys, flow/time.Duration(n), l)
	}()

	var problems []string
	var stop func() error
	runs, burst := 0, 0
	startMember := func() {
		runs++
		if !viaFx {
			m := join(t, k, "graceful", group, topic, fmt.Sprintf("m%d", runs), handler)
			stop = func() error {
				cerr, serr := m.leave()
				if serr != nil {
					return fmt.Errorf("Subscribe = %w", serr)
				}
				return cerr
			}
			return
		}
		var prod mq.Producer
		app := fxtest.New(t,
			fx.NopLogger,
			k.FxOptions(),
			fx.Supply(mq.ServiceName("graceful")),
			mq.Module,
			mq.AsSubscription(group, []string{topic}, handler),
			fx.Populate(&prod),
		)
		app.RequireStart()
		var stopOnce sync.Once
		var stopErr error
		stopApp := func() error {
			stopOnce.Do(func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitLong)
				defer cancel()
				stopErr = app.Stop(ctx)
			})
			return stopErr
		}
		t.Cleanup(func() { _ = stopApp() })
		// The app's own producer sends a burst just before the stop:
		// OnStop stops the consumer, then flushes the producer.
		var pending atomic.Int64
		base := 90_000_000 + runs*10_000
		for i := range 200 {
			v := id(base + i)
			l.send()
			pending.Add(1)
			prod.Send(context.Background(), &mq.Message{Topic: topic, Key: []byte(keyOf(i, keys)), Value: []byte(v)}, func(err error) {
				l.result(v, err)
				pending.Add(-1)
			})
		}
		burst += 200
		stop = func() error {
			err := stopApp()
			if left := pending.Load(); left != 0 {
				return fmt.Errorf("OnStop returned before %d Send callbacks of the app's producer ran (err %v)", left, err)
			}
			return err
		}
	}

	for i := range restarts {
		startMember()
		target := l.uniqueN() + 50 + rng.IntN(max(1, n/restarts))
		waitFor(t, waitLong, fmt.Sprintf("member %d to process up to %d", i, target), func() bool {
			return l.uniqueN() >= target || l.allProcessed() && isClosed(produced)
		})
		if inflight.Load() > 0 {
			busyStops++
		}
		if err := stop(); err != nil {
			problems = append(problems, fmt.Sprintf("stop %d: %v", i, err))
		}
	}
	startMember()
	<-produced
	waitProcessed(t, l)
	if err := stop(); err != nil {
		problems = append(problems, fmt.Sprintf("last stop: %v", err))
	}

	lay := readLayout(t, k, topic)
	end, err := committed(ctxFor(t), k, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p, e := range lay.ends {
		if end[p] != e {
			problems = append(problems, fmt.Sprintf("partition %d: committed %d at the end, want %d", p, end[p], e))
		}
	}
	sent, acked, failed, processed, lost, dup := l.figures()
	report(t, scenario, "broker", brokerKind(k), "runs", runs, "stops", runs, "busy_stops", busyStops, "sent", sent, "acked", acked, "failed", failed,
		"processed", processed, "lost", lost, "dup", dup, "app_burst", burst, "seed", seed, "took", time.Since(start))
	if len(problems) > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(firstN(problems, 20), "\n"))
	}
	if lost != 0 || dup != 0 || failed != 0 {
		t.Errorf("lost %d, duplicated %d, failed sends %d; a graceful stop must give 0, 0, 0 (lost e.g. %v)", lost, dup, failed, l.lostIDs(10))
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

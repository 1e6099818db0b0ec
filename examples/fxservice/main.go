// fxservice: a service main with fx.New(mq.Module, …): one producer path and one subscription.
//
// The app supplies mq.ServiceName, a coord.Provider and a clog.Logger; mq.Module
// provides the mq.Producer. A Feeder (the producer path) sends -n messages with
// SendSync from a goroutine its fx hooks own, and a subscription declared with
// mq.AsSubscription consumes them with a handler whose constructor takes *Stats
// from the graph and logs every message with clog.WithContext(ctx) (trace_id).
// Once all are consumed the app shuts itself down and prints
// "fxservice: produced 100, consumed 100".
//
// Embedded (the default, or MQ_EMBEDDED=true): an in-process Kafka and an
// in-memory config center (mqtest.Start); the example creates the topic.
//
//	go run ./examples/fxservice
//	go run ./examples/fxservice -n 1000 -log-level warn
//
// Against etcd and Kafka (-embedded=false or MQ_EMBEDDED=false): the config
// center is etcd at $COORD_ENDPOINTS (comma separated, default
// localhost:2379), which must hold the shared Kafka document under the key
// dev/global/kafka (etcd key /config/dev/global/kafka; the environment is
// $GOCHAT_ENV, default dev; fields in docs/config.md), at least
//
//	{"brokers": ["127.0.0.1:9092"]}
//
// and an im-logic/kafka document may override fields for this service. As a
// service would, the example expects the topic to exist. Step by step, from
// the repository root (skip the first line if `scripts/kafka.sh status single`
// says a broker runs):
//
//	scripts/kafka.sh start single
//	scripts/kafka.sh run org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 \
//		--create --if-not-exists --topic gochat.messages.upstream --partitions 6
//	d=$(mktemp -d)
//	etcd --name ex --data-dir $d --listen-client-urls http://127.0.0.1:23790 \
//		--advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
//		--initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster ex=http://127.0.0.1:23800 >$d/etcd.log 2>&1 &
//	curl -s http://127.0.0.1:23790/v3/kv/put -d "{\"key\": \"$(printf /config/dev/global/kafka | base64 -w0)\",
//		\"value\": \"$(printf '{"brokers": ["127.0.0.1:9092"]}' | base64 -w0)\"}"
//	COORD_ENDPOINTS=127.0.0.1:23790 go run ./examples/fxservice -embedded=false -exit-after-consume
//	kill %1; rm -rf $d
//
// Without -exit-after-consume (its default off etcd) the service keeps
// consuming until SIGINT or SIGTERM. Messages carry a header with this run's
// id: messages left in the topic by earlier runs are consumed but not counted.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kerr"
	"go.uber.org/fx"
)

const (
	service   = "im-logic"
	topic     = "gochat.messages.upstream"
	group     = "im-logic-group"
	runHeader = "fxservice-run"
)

// Settings are this run's parameters, supplied to the graph.
type Settings struct {
	N                int    // messages to produce
	Run              string // id of this run, sent in runHeader
	ExitAfterConsume bool   // shut the app down once N were consumed
}

func main() {
	embeddedDefault := true
	if v := os.Getenv("MQ_EMBEDDED"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fxservice: MQ_EMBEDDED=%q: want true or false\n", v)
			os.Exit(2)
		}
		embeddedDefault = b
	}
	embedded := flag.Bool("embedded", embeddedDefault, "in-process Kafka and config center instead of etcd at $COORD_ENDPOINTS; the default comes from $MQ_EMBEDDED when set")
	n := flag.Int("n", 100, "messages to produce")
	exitAfter := flag.Bool("exit-after-consume", false, "shut down once all -n messages were consumed (default true with -embedded, false without)")
	timeout := flag.Duration("timeout", time.Minute, "with -exit-after-consume: give up (exit 1) if not all are consumed by then")
	level := flag.String("log-level", "info", "log level: debug, info, warn, error")
	flag.Parse()
	exitSet := false
	flag.Visit(func(f *flag.Flag) { exitSet = exitSet || f.Name == "exit-after-consume" })
	if !exitSet {
		*exitAfter = *embedded
	}

	if err := run(*embedded, Settings{N: *n, Run: runID(), ExitAfterConsume: *exitAfter}, *timeout, *level); err != nil {
		fmt.Fprintln(os.Stderr, "fxservice:", err)
		os.Exit(1)
	}
}

func run(embedded bool, s Settings, timeout time.Duration, level string) error {
	ctx := context.Background()
	if err := clog.Init(ctx, &clog.Config{Level: level, Format: "console", Output: "stderr"}); err != nil {
		return err
	}
	provider, closeProvider, err := configCenter(ctx, embedded)
	if err != nil {
		return err
	}
	defer closeProvider()

	var stats *Stats
	app := fx.New(
		fx.NopLogger, // mq logs through the clog.Logger below
		mq.Module,
		fx.Supply(
			mq.ServiceName(service),
			fx.Annotate(provider, fx.As(new(coord.Provider))),
			fx.Annotate(clog.Default(), fx.As(new(clog.Logger))),
			s,
		),
		fx.Provide(NewStats, NewFeeder),
		fx.Invoke(func(*Feeder) {}), // the producer path runs with the app
		mq.AsSubscription(group, []string{topic}, NewHandler),
		fx.Populate(&stats),
	)

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := app.Start(startCtx); err != nil {
		return err
	}
	var errs []error
	var deadline <-chan time.Time
	if s.ExitAfterConsume {
		deadline = time.After(timeout)
	}
	select {
	case sig := <-app.Wait(): // Shutdowner.Shutdown, SIGINT or SIGTERM
		if sig.ExitCode != 0 {
			errs = append(errs, fmt.Errorf("shut down with exit code %d", sig.ExitCode))
		}
	case <-deadline:
		errs = append(errs, fmt.Errorf("not all %d messages consumed after %s", s.N, timeout))
	}
	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	errs = append(errs, app.Stop(stopCtx))

	produced, consumed, again := stats.Counts()
	fmt.Printf("fxservice: produced %d, consumed %d", produced, consumed)
	if again > 0 {
		fmt.Printf(" (and %d delivered again)", again)
	}
	fmt.Println()
	return errors.Join(errs...)
}

// configCenter returns the Provider mq reads its configuration from, and
// how to close it once the app stopped.
func configCenter(ctx context.Context, embedded bool) (coord.Provider, func(), error) {
	if embedded {
		k, err := mqtest.Start() // in-process Kafka; its config is under dev/global/kafka
		if err != nil {
			return nil, nil, err
		}
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		// With $MQ_TEST_BROKERS mqtest uses real brokers, where the topic may exist.
		if err := k.CreateTopic(tctx, topic, 6); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			k.Close()
			return nil, nil, err
		}
		return k.Provider, k.Close, nil
	}
	endpoints := os.Getenv(mq.EnvCoordEndpoints)
	if endpoints == "" {
		endpoints = "localhost:2379"
	}
	p, err := coord.New(ctx, &coord.Config{Endpoints: strings.Split(endpoints, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	return p, func() { _ = p.Close() }, nil
}

// Stats counts this run's messages.
type Stats struct {
	mu       sync.Mutex
	n        int
	produced int
	consumed map[string]bool // by value
	again    int
}

func NewStats(s Settings) *Stats { return &Stats{n: s.N, consumed: map[string]bool{}} }

func (st *Stats) sent() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.produced++
}

// received counts a consumed message and reports whether it was the last
// one missing.
func (st *Stats) received(value string) (last bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.consumed[value] {
		st.again++ // at-least-once: a redelivery
		return false
	}
	st.consumed[value] = true
	return len(st.consumed) == st.n
}

// Counts returns the messages produced, the distinct messages consumed and
// the redeliveries.
func (st *Stats) Counts() (produced, consumed, again int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.produced, len(st.consumed), st.again
}

// NewHandler builds the subscription's callback; fx fills its parameters.
func NewHandler(stats *Stats, s Settings, shutdowner fx.Shutdowner) mq.ConsumeCallback {
	return func(ctx context.Context, msg *mq.Message) error {
		logger := clog.WithContext(ctx) // carries the message's trace_id
		if string(msg.Headers[runHeader]) != s.Run {
			logger.Debug("fxservice: skipped a message of an earlier run", clog.ByteString("value", msg.Value))
			return nil
		}
		logger.Info("fxservice: consumed", clog.ByteString("key", msg.Key), clog.ByteString("value", msg.Value))
		if stats.received(string(msg.Value)) && s.ExitAfterConsume {
			if err := shutdowner.Shutdown(); err != nil {
				logger.Error("fxservice: shutdown", clog.Err(err))
			}
		}
		return nil
	}
}

// Feeder is the producer path: on start it sends Settings.N messages with
// SendSync from a goroutine it owns; on stop it cancels and waits for it.
type Feeder struct {
	producer   mq.Producer
	stats      *Stats
	settings   Settings
	shutdowner fx.Shutdowner

	cancel context.CancelFunc
	done   chan struct{}
}

func NewFeeder(lc fx.Lifecycle, producer mq.Producer, stats *Stats, s Settings, shutdowner fx.Shutdowner) *Feeder {
	f := &Feeder{producer: producer, stats: stats, settings: s, shutdowner: shutdowner}
	lc.Append(fx.Hook{OnStart: f.start, OnStop: f.stop})
	return f
}

func (f *Feeder) start(context.Context) error {
	// The goroutine's ctx is its own: the hook's ctx ends when start returns.
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go f.send(ctx)
	return nil
}

func (f *Feeder) send(ctx context.Context) {
	defer close(f.done)
	for i := range f.settings.N {
		msg := &mq.Message{
			Topic:   topic,
			Key:     []byte("user-" + strconv.Itoa(i%10)),
			Value:   []byte(fmt.Sprintf("%s-%d", f.settings.Run, i)),
			Headers: map[string][]byte{runHeader: []byte(f.settings.Run)},
		}
		// Send takes the trace_id from ctx; the consumer's ctx carries it back.
		tctx := clog.WithTraceID(ctx, fmt.Sprintf("trace-%s-%d", f.settings.Run, i))
		if err := f.producer.SendSync(tctx, msg); err != nil {
			if ctx.Err() != nil {
				return // stopping
			}
			clog.WithContext(tctx).Error("fxservice: send failed; shutting down", clog.Err(err))
			_ = f.shutdowner.Shutdown(fx.ExitCode(1))
			return
		}
		f.stats.sent()
	}
}

func (f *Feeder) stop(ctx context.Context) error {
	f.cancel()
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fxservice: feeder still sending: %w", ctx.Err())
	}
}

func runID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

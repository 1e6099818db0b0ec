package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/ceyewan/gochat/im-infra/mq"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kinds of throughput measurement.
const (
	kindProduce = "produce"      // async send, timed until the last ack
	kindSync    = "produce-sync" // SendSync from concurrent goroutines
	kindConsume = "consume"      // no-op callback, marks and commits on
)

// Client names; rawClient is the reference of every ratio.
const (
	clientMQ      = "mq"
	clientRaw     = "franz-go"
	clientKafkaGo = "kafka-go"
	clientSarama  = "sarama"
	clientJava    = "kafka-java-perf"
)

// measureTimeout bounds one measurement.
const measureTimeout = 5 * time.Minute

// sample is one measurement: Seconds is the throughput window (first send
// to last ack; first message consumed to last), Join the time from the
// start of a consumer until its first message.
type sample struct {
	Seconds float64 `json:"seconds"`
	Join    float64 `json:"join_seconds,omitempty"`
	Rate    float64 `json:"msgs_per_sec,omitempty"` // when the tool reports it itself
	// CPU is the CPU time of the process during the measurement (with the
	// in-process broker, the broker's too; for the Java tools, the JVM's
	// including start-up).
	CPU float64 `json:"cpu_seconds"`
	// RecsPerBatch is the mean number of records per produced batch (one
	// partition's share of a produce request), for mq and raw franz-go
	// async produce: with linger 0 it follows how fast the sender is.
	RecsPerBatch float64 `json:"records_per_batch,omitempty"`
	// GCCycles and GCCPU are the garbage collections of the process
	// during the measurement and the CPU time the runtime estimates they
	// took (with the in-process broker, the broker's heap is in them);
	// HeapLive is the live heap the last collection before it left.
	GCCycles uint64  `json:"gc_cycles"`
	GCCPU    float64 `json:"gc_cpu_seconds"`
	HeapLive uint64  `json:"heap_live_bytes_before"`
}

// batchCounter is a franz-go hook counting produced batches and records.
type batchCounter struct{ batches, records atomic.Int64 }

func (h *batchCounter) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	h.batches.Add(1)
	h.records.Add(int64(m.NumRecords))
}

func (h *batchCounter) mean() float64 {
	if b := h.batches.Load(); b > 0 {
		return float64(h.records.Load()) / float64(b)
	}
	return 0
}

type runner struct {
	kind, client, api string
	msgs              int
	// run measures once; consumers get a filled topic, producers an empty one.
	run func(ctx context.Context, topic string, n int) (sample, error)
}

func (r *runner) id() string { return r.kind + "/" + r.client }

type throughput struct {
	f         *flags
	b         *broker
	data      *dataset
	producers []*runner // produce and produce-sync
	consumers []*runner
	samples   map[string][]sample
}

func newThroughput(f *flags, b *broker) *throughput {
	t := &throughput{f: f, b: b, data: newDataset(f.size), samples: map[string][]sample{}}
	add := func(list *[]*runner, r *runner) {
		if f.want(r.id()) {
			*list = append(*list, r)
		}
	}
	add(&t.producers, &runner{kind: kindProduce, client: clientMQ, api: "Producer.Send + callback", msgs: f.n, run: t.mqProduce})
	add(&t.producers, &runner{kind: kindProduce, client: clientRaw, api: "Client.Produce + promise", msgs: f.n, run: t.rawProduce})
	add(&t.producers, &runner{kind: kindProduce, client: clientKafkaGo, api: "Writer{Async} + Completion", msgs: f.n, run: t.kafkaGoProduce})
	add(&t.producers, &runner{kind: kindProduce, client: clientSarama, api: "AsyncProducer + Successes", msgs: f.n, run: t.saramaProduce})
	add(&t.producers, &runner{kind: kindSync, client: clientMQ, api: fmt.Sprintf("Producer.SendSync x%d goroutines", f.syncConc), msgs: f.syncN, run: t.mqSync})
	add(&t.producers, &runner{kind: kindSync, client: clientRaw, api: fmt.Sprintf("Client.ProduceSync x%d goroutines", f.syncConc), msgs: f.syncN, run: t.rawSync})
	add(&t.consumers, &runner{kind: kindConsume, client: clientMQ, api: "Consumer.Subscribe, no-op callback", msgs: f.n, run: t.mqConsume})
	add(&t.consumers, &runner{kind: kindConsume, client: clientRaw, api: "PollFetches + callback + MarkCommitRecords", msgs: f.n, run: t.rawConsume})
	add(&t.consumers, &runner{kind: kindConsume, client: clientKafkaGo, api: "Reader{GroupID}.ReadMessage", msgs: f.n, run: t.kafkaGoConsume})
	add(&t.consumers, &runner{kind: kindConsume, client: clientSarama, api: "ConsumerGroup + MarkMessage", msgs: f.n, run: t.saramaConsume})
	if b.real && f.java {
		add(&t.producers, &runner{kind: kindProduce, client: clientJava, api: "ProducerPerformance, steady state", msgs: f.n, run: t.javaProduce})
		add(&t.consumers, &runner{kind: kindConsume, client: clientJava, api: "ConsumerPerformance", msgs: f.n, run: t.javaConsume})
	}
	return t
}

// warmUp warms a real broker up, then runs every client once on a tenth
// of the messages.
func (t *throughput) warmUp(ctx context.Context) error {
	if len(t.producers)+len(t.consumers) == 0 {
		return nil
	}
	if err := t.warmBroker(ctx); err != nil {
		return err
	}
	n := max(t.f.n/10, 2000)
	log.Printf("warm-up: every client, %d messages", n)
	for _, r := range t.producers {
		if r.client == clientJava {
			continue // a fresh JVM per run: nothing to warm
		}
		s, err := t.measureProducer(ctx, r, min(n, r.msgs))
		if err != nil {
			return err
		}
		log.Printf("  (warm-up) %-22s %.2fs", r.id(), s.Seconds)
	}
	if len(t.consumers) == 0 {
		return nil
	}
	topic, err := t.b.newTopic(ctx, "warm", t.f.partitions)
	if err != nil {
		return err
	}
	defer t.b.deleteTopic(ctx, topic)
	if err := t.b.fill(ctx, topic, t.data, n, false); err != nil {
		return err
	}
	for _, r := range t.consumers {
		if r.client == clientJava {
			continue
		}
		s, err := t.measure(ctx, r, topic, n)
		if err != nil {
			return err
		}
		log.Printf("  (warm-up) %-22s %.2fs, join %.2fs", r.id(), s.Seconds, s.Join)
	}
	return nil
}

// warmBroker has raw franz-go produce to a real broker, n messages at a
// time, for -broker-warmup. A Kafka broker just started is slow for about
// its first minute under this load (raw franz-go's produce rounds went
// 344k, 609k, 511k, 873k, 1019k msg/s in a run started on a fresh broker;
// a 20 s warm-up still left the first round at half speed; the warm-up's
// own rate went ~600k, ~400k from 20 to 60 s, then ~1M): without this the
// rounds measured a moving target, and a client's median depended on where
// its rounds fell. BENCHMARKS.md, finding 14.
func (t *throughput) warmBroker(ctx context.Context) error {
	if !t.b.real || t.f.brokerWarmup <= 0 {
		return nil
	}
	log.Printf("broker warm-up: raw franz-go produce for %v", t.f.brokerWarmup)
	raw := &runner{kind: kindProduce, client: clientRaw, msgs: t.f.n, run: t.rawProduce}
	for end := time.Now().Add(t.f.brokerWarmup); time.Now().Before(end); {
		s, err := t.measureProducer(ctx, raw, t.f.n)
		if err != nil {
			return fmt.Errorf("broker warm-up: %w", err)
		}
		log.Printf("  (broker warm-up) %-22s %9.0f msg/s", raw.id(), float64(t.f.n)/s.Seconds)
	}
	return nil
}

// round measures every client once; the order rotates from round to round.
func (t *throughput) round(ctx context.Context, round int) error {
	for i := range t.producers {
		r := t.producers[(i+round)%len(t.producers)]
		s, err := t.measureProducer(ctx, r, r.msgs)
		if err != nil {
			return err
		}
		t.record(r, s)
	}
	if len(t.consumers) == 0 {
		return nil
	}
	topic, err := t.b.newTopic(ctx, "consume", t.f.partitions)
	if err != nil {
		return err
	}
	defer t.b.deleteTopic(ctx, topic)
	if err := t.b.fill(ctx, topic, t.data, t.f.n, false); err != nil {
		return err
	}
	for i := range t.consumers {
		r := t.consumers[(i+round)%len(t.consumers)]
		s, err := t.measure(ctx, r, topic, r.msgs)
		if err != nil {
			return err
		}
		t.record(r, s)
	}
	return nil
}

func (t *throughput) measureProducer(ctx context.Context, r *runner, n int) (sample, error) {
	topic, err := t.b.newTopic(ctx, "produce", t.f.partitions)
	if err != nil {
		return sample{}, err
	}
	defer t.b.deleteTopic(ctx, topic)
	return t.measure(ctx, r, topic, n)
}

func (t *throughput) measure(ctx context.Context, r *runner, topic string, n int) (sample, error) {
	mctx, cancel := context.WithTimeout(ctx, measureTimeout)
	defer cancel()
	// Every client starts from a collected heap. Without this, a client
	// measured right after one whose topic was large (kfake holds a
	// topic's data in this process until it is deleted) started with the
	// heap goal that topic left, and collected a third as often as one
	// measured after a small topic: BENCHMARKS.md, finding 13.
	runtime.GC()
	gc0 := readGC()
	cpu := cpuNow()
	s, err := r.run(mctx, topic, n)
	if s.CPU == 0 {
		s.CPU = (cpuNow() - cpu).Seconds()
	}
	gc1 := readGC()
	s.GCCycles, s.GCCPU, s.HeapLive = gc1.cycles-gc0.cycles, gc1.cpu-gc0.cpu, gc0.live
	if err != nil {
		return s, fmt.Errorf("%s: %w", r.id(), err)
	}
	return s, nil
}

func (t *throughput) record(r *runner, s sample) {
	t.samples[r.id()] = append(t.samples[r.id()], s)
	rate := s.Rate
	if rate == 0 {
		rate = float64(r.msgs) / s.Seconds
	}
	batch := ""
	if s.RecsPerBatch > 0 {
		batch = fmt.Sprintf(", %.0f records/batch", s.RecsPerBatch)
	}
	log.Printf("  %-22s %9.0f msg/s  (%.2fs, %.2f CPU-us/msg%s; %d GCs, %.2f GC-CPU-us/msg, live heap %d MB before)",
		r.id(), rate, s.Seconds, s.CPU/float64(r.msgs)*1e6, batch, s.GCCycles, s.GCCPU/float64(r.msgs)*1e6, s.HeapLive>>20)
}

// ---------------------------------------------------------------- produce

// waitAcks waits for n acks counted by acked, or ctx.
func waitAcks(ctx context.Context, done <-chan struct{}, acked *atomic.Int64, n int) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d of %d acks: %w", acked.Load(), n, ctx.Err())
	}
}

// acker counts acks and failures and closes done at the n-th.
type acker struct {
	n      int64
	acked  atomic.Int64
	failed atomic.Int64
	first  atomic.Value
	done   chan struct{}
	last   time.Time
}

func newAcker(n int) *acker { return &acker{n: int64(n), done: make(chan struct{})} }

func (a *acker) ack(err error) {
	if err != nil && a.failed.Add(1) == 1 {
		a.first.Store(err)
	}
	if a.acked.Add(1) == a.n {
		a.last = time.Now()
		close(a.done)
	}
}

func (a *acker) wait(ctx context.Context) error {
	if err := waitAcks(ctx, a.done, &a.acked, int(a.n)); err != nil {
		return err
	}
	if f := a.failed.Load(); f > 0 {
		return fmt.Errorf("%d sends failed, first: %v", f, a.first.Load())
	}
	return nil
}

// asInjected hides p's concrete type from the compiler, as an fx
// dependency or a struct field does. Were Send devirtualized (the compiler
// sees through NewProducer in a function like mqProduce), escape analysis
// would keep each Message on the stack, which a service's Send through the
// interface does not get: 80 bytes more per Send, measured at -0.03 to
// -0.04 of the ratio on kfake.
//
//go:noinline
func asInjected(p mq.Producer) mq.Producer { return p }

// mqProduce sends n messages with Send, a new Message each, as a service
// builds one per request, through the Producer interface, as a service
// holds it (an fx dependency, a struct field).
func (t *throughput) mqProduce(ctx context.Context, topic string, n int) (sample, error) {
	h := &batchCounter{}
	np, err := mq.NewProducer(ctx, "bench-producer", append(t.b.mqOptions(), mq.WithClientOptions(kgo.WithHooks(h)))...)
	if err != nil {
		return sample{}, err
	}
	defer np.Close()
	p := asInjected(np)
	a := newAcker(n)
	// One callback for every Send, as raw franz-go's one promise: a.ack
	// written in the call would allocate a method value per Send.
	ack := a.ack
	start := time.Now()
	for i := 0; i < n; i++ {
		p.Send(ctx, &mq.Message{Topic: topic, Key: t.data.key(i), Value: t.data.value}, ack)
	}
	if err := a.wait(ctx); err != nil {
		return sample{}, err
	}
	return sample{Seconds: a.last.Sub(start).Seconds(), RecsPerBatch: h.mean()}, nil
}

func (t *throughput) rawProduce(ctx context.Context, topic string, n int) (sample, error) {
	h := &batchCounter{}
	cl, err := kgo.NewClient(append(t.b.kgoProducerOpts(), kgo.WithHooks(h))...)
	if err != nil {
		return sample{}, err
	}
	defer cl.Close()
	a := newAcker(n)
	promise := func(_ *kgo.Record, err error) { a.ack(err) }
	start := time.Now()
	for i := 0; i < n; i++ {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: t.data.key(i), Value: t.data.value}, promise)
	}
	if err := a.wait(ctx); err != nil {
		return sample{}, err
	}
	return sample{Seconds: a.last.Sub(start).Seconds(), RecsPerBatch: h.mean()}, nil
}

// kafka-go has no idempotent producer. Batching: up to 1 MB per partition
// (as franz-go's batch_max_bytes) and a batch timeout (its linger) of
// -kafkago-batch-timeout, 100 ms: kafka-go cannot linger 0 (0 means its 1 s
// default), and on this box its async writer does best at 100 ms (50 ms:
// -20%, 20 ms: -70%, 1 s: -55%, the last partial batches waiting): shorter
// timeouts make per-batch timer goroutines contend with WriteMessages.
func (t *throughput) kafkaGoProduce(ctx context.Context, topic string, n int) (sample, error) {
	a := newAcker(n)
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafkago.Writer{
		Addr:         kafkago.TCP(t.b.brokers...),
		Topic:        topic,
		Balancer:     &kafkago.Hash{},
		RequiredAcks: kafkago.RequireAll,
		Async:        true,
		BatchSize:    100_000,
		BatchBytes:   1000012,
		BatchTimeout: t.f.kafkaGoBatchTimeout,
		// Its own transport: the shared default caches metadata for
		// seconds and would not know the fresh topic.
		Transport: tr,
		Completion: func(msgs []kafkago.Message, err error) {
			for range msgs {
				a.ack(err)
			}
		},
	}
	if t.f.compression == "snappy" {
		w.Compression = kafkago.Snappy
	}
	defer w.Close()
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := w.WriteMessages(ctx, kafkago.Message{Key: t.data.key(i), Value: t.data.value}); err != nil {
			return sample{}, err
		}
	}
	if err := a.wait(ctx); err != nil {
		return sample{}, err
	}
	return sample{Seconds: a.last.Sub(start).Seconds()}, nil
}

func (t *throughput) saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V4_0_0_0
	c.ClientID = "bench"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1 // required by Idempotent
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.MaxMessageBytes = 1000012
	c.Producer.Compression = sarama.CompressionNone
	if t.f.compression == "snappy" {
		c.Producer.Compression = sarama.CompressionSnappy
	}
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = true
	c.Consumer.Offsets.AutoCommit.Interval = time.Second
	return c
}

func (t *throughput) saramaProduce(ctx context.Context, topic string, n int) (sample, error) {
	p, err := sarama.NewAsyncProducer(t.b.brokers, t.saramaConfig())
	if err != nil {
		return sample{}, err
	}
	a := newAcker(n)
	var drained sync.WaitGroup
	drained.Add(2)
	go func() {
		defer drained.Done()
		for range p.Successes() {
			a.ack(nil)
		}
	}()
	go func() {
		defer drained.Done()
		for e := range p.Errors() {
			a.ack(e.Err)
		}
	}()
	defer func() {
		p.AsyncClose()
		drained.Wait()
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		msg := &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(t.data.key(i)), Value: sarama.ByteEncoder(t.data.value)}
		select {
		case p.Input() <- msg:
		case <-ctx.Done():
			return sample{}, ctx.Err()
		}
	}
	if err := a.wait(ctx); err != nil {
		return sample{}, err
	}
	return sample{Seconds: a.last.Sub(start).Seconds()}, nil
}

// syncLoop calls send for n messages from conc goroutines.
func syncLoop(n, conc int, send func(i int) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	start := time.Now()
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := send(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}

func (t *throughput) mqSync(ctx context.Context, topic string, n int) (sample, error) {
	np, err := mq.NewProducer(ctx, "bench-producer", t.b.mqOptions()...)
	if err != nil {
		return sample{}, err
	}
	defer np.Close()
	p := asInjected(np)
	d, err := syncLoop(n, t.f.syncConc, func(i int) error {
		return p.SendSync(ctx, &mq.Message{Topic: topic, Key: t.data.key(i), Value: t.data.value})
	})
	return sample{Seconds: d.Seconds()}, err
}

func (t *throughput) rawSync(ctx context.Context, topic string, n int) (sample, error) {
	cl, err := kgo.NewClient(t.b.kgoProducerOpts()...)
	if err != nil {
		return sample{}, err
	}
	defer cl.Close()
	d, err := syncLoop(n, t.f.syncConc, func(i int) error {
		return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: t.data.key(i), Value: t.data.value}).FirstErr()
	})
	return sample{Seconds: d.Seconds()}, err
}

// ---------------------------------------------------------------- consume

// counter times a consumer: the first message and the n-th. Its callers
// may be concurrent (mq's partition workers, sarama's claims): each message
// is counted on one of counterShards cache lines chosen by its key, so that
// the instrument does not make callbacks on two cores fight over one line,
// which it did with a single atomic (a quarter of mq's per-message worker
// CPU on kfake: BENCHMARKS.md, finding 13). Shards flush to flushed every
// flushEvery messages; near n every add sums the shards, so the n-th
// message is seen exactly.
type counter struct {
	n       int64
	start   time.Time
	done    chan struct{}
	last    time.Time
	_       [64]byte
	first   atomic.Int64 // unix nanos of the first message; written once
	_       [56]byte
	flushed atomic.Int64
	_       [56]byte
	endgame atomic.Bool
	closed  atomic.Bool
	_       [56]byte
	shards  [counterShards]struct {
		v atomic.Int64
		_ [56]byte
	}
}

const (
	counterShards = 16
	flushEvery    = 256
)

func newCounter(n int) *counter {
	c := &counter{n: int64(n), start: time.Now(), done: make(chan struct{})}
	c.endgame.Store(c.n <= counterShards*flushEvery)
	return c
}

// add counts a message with this key.
func (c *counter) add(key []byte) {
	if c.first.Load() == 0 {
		c.first.CompareAndSwap(0, time.Now().UnixNano())
	}
	sh := 0
	if l := len(key); l >= 2 {
		sh = (int(key[l-1]) + 7*int(key[l-2])) % counterShards
	}
	if v := c.shards[sh].v.Add(1); v%flushEvery == 0 && c.flushed.Add(flushEvery) >= c.n-counterShards*flushEvery {
		c.endgame.Store(true)
	}
	if c.endgame.Load() {
		var sum int64
		for i := range c.shards {
			sum += c.shards[i].v.Load()
		}
		if sum >= c.n && c.closed.CompareAndSwap(false, true) {
			c.last = time.Now()
			close(c.done)
		}
	}
}

func (c *counter) seen() int64 {
	var sum int64
	for i := range c.shards {
		sum += c.shards[i].v.Load()
	}
	return sum
}

func (c *counter) wait(ctx context.Context) (sample, error) {
	select {
	case <-c.done:
	case <-ctx.Done():
		return sample{}, fmt.Errorf("consumed %d of %d: %w", c.seen(), c.n, ctx.Err())
	}
	first := time.Unix(0, c.first.Load())
	return sample{Seconds: c.last.Sub(first).Seconds(), Join: first.Sub(c.start).Seconds()}, nil
}

func (t *throughput) mqConsume(ctx context.Context, topic string, n int) (sample, error) {
	c, err := mq.NewConsumer(ctx, "bench-consumer", uniqueName("mq"), t.b.mqOptions()...)
	if err != nil {
		return sample{}, err
	}
	cnt := newCounter(n)
	sctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Subscribe(sctx, []string{topic}, func(_ context.Context, m *mq.Message) error {
			cnt.add(m.Key)
			return nil
		})
	}()
	s, werr := cnt.wait(ctx)
	cancel()
	serr := <-errc
	cerr := c.Close()
	return s, errors.Join(werr, serr, cerr)
}

// handleRecord is the raw loops' per-record callback.
var handleRecord = func(context.Context, *kgo.Record) error { return nil }

func (t *throughput) rawConsume(ctx context.Context, topic string, n int) (sample, error) {
	cnt := newCounter(n)
	cl, err := kgo.NewClient(t.b.kgoConsumerOpts(uniqueName("raw"), topic)...)
	if err != nil {
		return sample{}, err
	}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rawPollLoop(lctx, cl, func(r *kgo.Record) {
			_ = handleRecord(lctx, r)
			cnt.add(r.Key)
		})
	}()
	s, err := cnt.wait(ctx)
	cancel()
	<-done
	if err == nil {
		err = cl.CommitMarkedOffsets(ctx) // as mq does on Close
	}
	cl.Close()
	return s, err
}

func (t *throughput) kafkaGoConsume(ctx context.Context, topic string, n int) (sample, error) {
	cnt := newCounter(n)
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:        t.b.brokers,
		GroupID:        uniqueName("kafkago"),
		Topic:          topic,
		MinBytes:       1,
		MaxBytes:       1 << 20, // per partition, as franz-go's default
		CommitInterval: time.Second,
		StartOffset:    kafkago.FirstOffset,
		MaxWait:        time.Second, // bounds Close (default 10s); fetches return as soon as data is there
	})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := r.ReadMessage(rctx)
			if err != nil {
				return
			}
			cnt.add(m.Key)
		}
	}()
	s, err := cnt.wait(ctx)
	cancel()
	<-done
	return s, errors.Join(err, r.Close())
}

type saramaHandler struct{ cnt *counter }

func (saramaHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (saramaHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h saramaHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			sess.MarkMessage(msg, "")
			h.cnt.add(msg.Key)
		case <-sess.Context().Done():
			return nil
		}
	}
}

func (t *throughput) saramaConsume(ctx context.Context, topic string, n int) (sample, error) {
	cnt := newCounter(n)
	cg, err := sarama.NewConsumerGroup(t.b.brokers, uniqueName("sarama"), t.saramaConfig())
	if err != nil {
		return sample{}, err
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		var err error
		for cctx.Err() == nil {
			if err = cg.Consume(cctx, []string{topic}, saramaHandler{cnt}); err != nil && cctx.Err() == nil {
				break
			}
		}
		if cctx.Err() != nil {
			err = nil
		}
		done <- err
	}()
	var s sample
	select {
	case <-cnt.done:
		s, err = cnt.wait(ctx)
	case err = <-done:
		done <- nil
		if err == nil {
			err = ctx.Err()
		}
	}
	cancel()
	cerr := <-done
	return s, errors.Join(err, cerr, cg.Close())
}

// ---------------------------------------------------------------- results

type throughputResult struct {
	ID           string   `json:"id"`
	Kind         string   `json:"kind"`
	Client       string   `json:"client"`
	API          string   `json:"api"`
	Msgs         int      `json:"msgs"`
	Samples      []sample `json:"samples"`
	MsgsPerSec   float64  `json:"msgs_per_sec"` // median over the rounds
	MBPerSec     float64  `json:"mb_per_sec"`   // values only, 10^6 bytes
	Ratio        float64  `json:"ratio_to_franz_go"`
	JoinSec      float64  `json:"median_join_seconds,omitempty"`
	CPUus        float64  `json:"median_cpu_us_per_msg"`
	RecsPerBatch float64  `json:"median_records_per_batch,omitempty"`
	GCs          float64  `json:"median_gc_cycles"`
}

func (t *throughput) results() []throughputResult {
	var out []throughputResult
	for _, list := range [][]*runner{t.producers, t.consumers} {
		for _, r := range list {
			ss := t.samples[r.id()]
			if len(ss) == 0 {
				continue
			}
			var rates, joins, cpus, batches, gcs []float64
			for _, s := range ss {
				gcs = append(gcs, float64(s.GCCycles))
				if s.RecsPerBatch > 0 {
					batches = append(batches, s.RecsPerBatch)
				}
				cpus = append(cpus, s.CPU/float64(r.msgs)*1e6)
				rate := s.Rate
				if rate == 0 {
					rate = float64(r.msgs) / s.Seconds
				}
				rates = append(rates, rate)
				joins = append(joins, s.Join)
			}
			res := throughputResult{ID: r.id(), Kind: r.kind, Client: r.client, API: r.api, Msgs: r.msgs, Samples: ss,
				MsgsPerSec: median(rates), JoinSec: median(joins), CPUus: median(cpus), RecsPerBatch: median(batches), GCs: median(gcs)}
			res.MBPerSec = res.MsgsPerSec * float64(t.f.size) / 1e6
			out = append(out, res)
		}
	}
	for i := range out {
		for _, ref := range out {
			if ref.Kind == out[i].Kind && ref.Client == clientRaw {
				out[i].Ratio = out[i].MsgsPerSec / ref.MsgsPerSec
			}
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

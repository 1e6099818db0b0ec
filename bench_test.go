//go:build unix

package mq_test

// Benchmarks of the per-message paths. Run them with
//
//	go test -run '^$' -bench . -benchmem
//
// On the in-process broker (kfake, the default) the broker runs in the
// benchmark's process, so allocs/op includes the broker's allocations for
// the message; read the mq rows against the raw franz-go rows measured on the
// same broker. With MQ_TEST_BROKERS=127.0.0.1:9092 (a real Kafka, see
// scripts/kafka.sh) only the client allocates.

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	benchValueSize  = 256
	benchPartitions = 6
	// benchConsumeN is the number of messages one consume iteration reads.
	benchConsumeN = 50_000
)

// benchConfig makes mq's producer match benchKgoProducerOpts: compression
// none (mq's default is snappy) and everything else at mq's defaults.
func benchConfig() map[string]any {
	return map[string]any{
		"producer": map[string]any{"compression": "none"},
		"consumer": map[string]any{"commit_interval": "1s"}, // mq's default; mqtest shortens it
	}
}

// benchKgoProducerOpts are the franz-go options mq derives from its default
// config (acks=all, idempotent, linger 0, 1 MB batches, 10000 buffered
// records), with compression none.
func benchKgoProducerOpts(brokers []string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(1000012),
		kgo.MaxBufferedRecords(10000),
		kgo.RecordDeliveryTimeout(2 * time.Minute),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}
}

func benchKafka(b *testing.B) (*mqtest.Kafka, string) {
	b.Helper()
	k, err := mqtest.Start(mqtest.WithGlobalConfig(benchConfig()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(k.Close)
	return k, k.NewTopic(b, benchPartitions)
}

// benchMessages returns n keyed messages of benchValueSize bytes cycling
// over 1024 keys.
func benchMessages(topic string, n int) []*mq.Message {
	value := make([]byte, benchValueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	msgs := make([]*mq.Message, n)
	for i := range msgs {
		msgs[i] = &mq.Message{Topic: topic, Key: fmt.Appendf(nil, "user-%04d", i%1024), Value: value}
	}
	return msgs
}

func BenchmarkToRecord(b *testing.B) {
	value := make([]byte, benchValueSize)
	cases := []struct {
		name string
		ctx  context.Context
		msg  *mq.Message
	}{
		{"plain", context.Background(), &mq.Message{Topic: "t", Key: []byte("user-1"), Value: value}},
		{"trace_id_from_ctx", clog.WithTraceID(context.Background(), "4bf92f3577b34da6a3ce929d0e0e4736"),
			&mq.Message{Topic: "t", Key: []byte("user-1"), Value: value}},
		{"3_headers", context.Background(), &mq.Message{Topic: "t", Key: []byte("user-1"), Value: value,
			Headers: map[string][]byte{"trace_id": []byte("abc"), "type": []byte("chat"), "v": []byte("1")}}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = mq.ToRecord(c.ctx, c.msg)
			}
		})
	}
}

func BenchmarkFromRecord(b *testing.B) {
	value := make([]byte, benchValueSize)
	cases := []struct {
		name string
		rec  *kgo.Record
	}{
		{"plain", &kgo.Record{Topic: "t", Key: []byte("user-1"), Value: value}},
		{"3_headers", &kgo.Record{Topic: "t", Key: []byte("user-1"), Value: value, Headers: []kgo.RecordHeader{
			{Key: "trace_id", Value: []byte("abc")}, {Key: "type", Value: []byte("chat")}, {Key: "v", Value: []byte("1")}}}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = mq.FromRecord(c.rec)
			}
		})
	}
}

// cpuNow returns the CPU time (user+system) the process has used. On a
// noisy machine cpu-ns/op is steadier than ns/op; on the in-process broker
// it includes the broker's work.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter reports cpu-ns/op when the benchmark ends.
func cpuMeter(b *testing.B) func() {
	start := cpuNow()
	return func() {
		b.ReportMetric(float64(cpuNow()-start)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkProduce: one op is one message sent and acknowledged
// (acks=all); the time includes waiting for the last acknowledgement.
func BenchmarkProduce(b *testing.B) {
	k, topic := benchKafka(b)
	ctx := context.Background()

	b.Run("mq_Send", func(b *testing.B) {
		p, err := mq.NewProducer(ctx, "bench", k.Options()...)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		msgs := benchMessages(topic, 4096)
		var wg sync.WaitGroup
		var failed atomic.Int64
		cb := func(err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		}
		b.ReportAllocs()
		b.ResetTimer()
		defer cpuMeter(b)()
		for i := 0; i < b.N; i++ {
			wg.Add(1)
			p.Send(ctx, msgs[i%len(msgs)], cb)
		}
		wg.Wait()
		b.StopTimer()
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d sends failed", n)
		}
	})

	b.Run("franz-go_Produce", func(b *testing.B) {
		cl, err := kgo.NewClient(benchKgoProducerOpts(k.Brokers)...)
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		msgs := benchMessages(topic, 4096)
		var wg sync.WaitGroup
		var failed atomic.Int64
		promise := func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		}
		b.ReportAllocs()
		b.ResetTimer()
		defer cpuMeter(b)()
		for i := 0; i < b.N; i++ {
			m := msgs[i%len(msgs)]
			wg.Add(1)
			// Like mq, one record per message (the record is handed to the client).
			cl.Produce(ctx, &kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value}, promise)
		}
		wg.Wait()
		b.StopTimer()
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d produces failed", n)
		}
	})

	b.Run("mq_SendSync_parallel", func(b *testing.B) {
		p, err := mq.NewProducer(ctx, "bench", k.Options()...)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		msgs := benchMessages(topic, 4096)
		var next atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(32) // 64 goroutines on 2 CPUs
		b.ResetTimer()
		defer cpuMeter(b)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := p.SendSync(ctx, msgs[int(next.Add(1))%len(msgs)]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("franz-go_ProduceSync_parallel", func(b *testing.B) {
		cl, err := kgo.NewClient(benchKgoProducerOpts(k.Brokers)...)
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		msgs := benchMessages(topic, 4096)
		var next atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(32)
		b.ResetTimer()
		defer cpuMeter(b)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m := msgs[int(next.Add(1))%len(msgs)]
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value}).FirstErr(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkConsume: each iteration joins a fresh group and reads the
// benchConsumeN messages of a pre-filled topic with a no-op callback,
// marking and committing as mq does by default (raw franz-go: PollFetches,
// a per-record callback, MarkCommitRecords of each partition's last record
// and AutoCommitMarks every second, as mq's default commit_interval). ns/msg
// and allocs/msg include the group join and the final commit.
func BenchmarkConsume(b *testing.B) {
	k, topic := benchKafka(b)
	ctx := context.Background()
	benchFill(b, k, topic, benchConsumeN)
	var group atomic.Int64
	groupID := func() string { return fmt.Sprintf("bench-%s-%d", topic, group.Add(1)) }

	b.Run("mq", func(b *testing.B) {
		benchConsumeLoop(b, func() {
			c, err := mq.NewConsumer(ctx, "bench", groupID(), k.Options()...)
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			done := make(chan struct{})
			sctx, cancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() {
				errc <- c.Subscribe(sctx, []string{topic}, func(context.Context, *mq.Message) error {
					if n.Add(1) == benchConsumeN {
						close(done)
					}
					return nil
				})
			}()
			<-done
			cancel()
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
		})
	})

	b.Run("franz-go", func(b *testing.B) {
		benchConsumeLoop(b, func() {
			cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...),
				kgo.ConsumerGroup(groupID()), kgo.ConsumeTopics(topic),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.AutoCommitMarks(), kgo.AutoCommitInterval(time.Second),
				kgo.FetchMaxBytes(50<<20))
			if err != nil {
				b.Fatal(err)
			}
			handle := func(context.Context, *kgo.Record) error { return nil }
			n := 0
			for n < benchConsumeN {
				fs := cl.PollRecords(ctx, 10000)
				fs.EachError(func(t string, p int32, err error) { b.Fatalf("fetch %s/%d: %v", t, p, err) })
				fs.EachPartition(func(p kgo.FetchTopicPartition) {
					if len(p.Records) == 0 {
						return
					}
					for _, r := range p.Records {
						_ = handle(ctx, r)
						n++
					}
					// Like mq: mark the last record handled, once per batch.
					cl.MarkCommitRecords(p.Records[len(p.Records)-1])
				})
			}
			if err := cl.CommitMarkedOffsets(ctx); err != nil {
				b.Fatal(err)
			}
			cl.Close()
		})
	})
}

// benchConsumeLoop runs one consume per iteration and reports ns/msg and
// allocs/msg.
func benchConsumeLoop(b *testing.B, consume func()) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cpu := cpuNow()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		consume()
	}
	b.StopTimer()
	cpu = cpuNow() - cpu
	runtime.ReadMemStats(&after)
	msgs := float64(b.N) * benchConsumeN
	b.ReportMetric(float64(cpu.Nanoseconds())/msgs, "cpu-ns/msg")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/msgs, "ns/msg")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/msgs, "allocs/msg")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/msgs, "B/msg")
}

// benchFill produces n messages to topic with raw franz-go.
func benchFill(b *testing.B, k *mqtest.Kafka, topic string, n int) {
	b.Helper()
	cl, err := kgo.NewClient(benchKgoProducerOpts(k.Brokers)...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, m := range benchMessages(topic, n) {
		wg.Add(1)
		cl.Produce(context.Background(), &kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		b.Fatalf("fill %s: %d produces failed", topic, failed.Load())
	}
}

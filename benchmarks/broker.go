package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// broker is the cluster every client of a run talks to, and a config
// center holding mq's configuration for it.
type broker struct {
	k       *mqtest.Kafka
	brokers []string
	real    bool
	f       *flags
}

func startBroker(f *flags) (*broker, error) {
	// mq's defaults (docs/config.md), except the compression, which every
	// client of the run shares. mqtest's own defaults shorten the consumer
	// timings for tests; put mq's defaults back.
	cfg := map[string]any{
		"producer": map[string]any{"compression": f.compression, "close_timeout": "30s"},
		"consumer": map[string]any{
			"commit_interval":    "1s",
			"session_timeout":    "45s",
			"heartbeat_interval": "3s",
			"rebalance_timeout":  "60s",
			"close_timeout":      "30s",
		},
	}
	opts := []mqtest.Option{mqtest.WithGlobalConfig(cfg), mqtest.WithDefaultPartitions(int32(f.partitions))}
	if f.brokers != "" {
		opts = append(opts, mqtest.WithBrokers(strings.Split(f.brokers, ",")...))
	} else {
		// mqtest.Start would use $MQ_TEST_BROKERS; -brokers decides here.
		os.Unsetenv(mqtest.EnvBrokers)
	}
	k, err := mqtest.Start(opts...)
	if err != nil {
		return nil, err
	}
	return &broker{k: k, brokers: k.Brokers, real: k.Real(), f: f}, nil
}

func (b *broker) close() { b.k.Close() }

func (b *broker) mqOptions() []mq.Option { return b.k.Options() }

func uniqueName(prefix string) string {
	r := make([]byte, 4)
	_, _ = rand.Read(r)
	return fmt.Sprintf("bench-%s-%d-%s", prefix, time.Now().UnixNano()%1e9, hex.EncodeToString(r))
}

// newTopic creates a fresh topic.
func (b *broker) newTopic(ctx context.Context, prefix string, partitions int) (string, error) {
	topic := uniqueName(prefix)
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := b.k.CreateTopic(cctx, topic, int32(partitions)); err != nil {
		return "", err
	}
	t1 := time.Now()
	if err := b.waitWritable(cctx, topic, partitions); err != nil {
		return "", err
	}
	if b.f.verbose {
		log.Printf("topic %s: created in %v, writable %v later", topic, t1.Sub(t0), time.Since(t1))
	}
	return topic, nil
}

// waitWritable writes a probe record (16 zero bytes) to every partition of
// a fresh topic. A real broker may still answer NOT_LEADER_FOR_PARTITION
// right after the topic's creation, and franz-go then waits its 5 s
// metadata min age before retrying (this probe client: 50 ms): that stall
// belongs to topic creation, not to the client measured next.
func (b *broker) waitWritable(ctx context.Context, topic string, partitions int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	recs := make([]*kgo.Record, partitions)
	for p := range recs {
		recs[p] = &kgo.Record{Topic: topic, Partition: int32(p), Value: make([]byte, 16)}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("topic %s not writable: %w", topic, err)
	}
	return nil
}

// deleteTopic frees the topic's data (kfake keeps it in memory).
func (b *broker) deleteTopic(ctx context.Context, topic string) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, _ = b.k.Admin().DeleteTopics(dctx, topic)
}

// kgoProducerOpts are the franz-go options mq derives from its default
// producer config: acks=all, idempotent, linger 0, 1 MB batches, 10000
// buffered records, the run's compression.
func (b *broker) kgoProducerOpts() []kgo.Opt {
	c := kgo.NoCompression()
	if b.f.compression == "snappy" {
		c = kgo.SnappyCompression()
	}
	return []kgo.Opt{
		kgo.SeedBrokers(b.brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(1000012),
		kgo.MaxBufferedRecords(10000),
		kgo.RecordDeliveryTimeout(2 * time.Minute),
		kgo.ProducerBatchCompression(c),
	}
}

// kgoConsumerOpts are the franz-go options of mq's default consumer config.
func (b *broker) kgoConsumerOpts(group, topic string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(b.brokers...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Second),
		kgo.SessionTimeout(45 * time.Second),
		kgo.RebalanceTimeout(60 * time.Second),
		kgo.HeartbeatInterval(3 * time.Second),
		kgo.FetchMaxBytes(50 << 20),
	}
}

// fill produces n messages to topic with raw franz-go; roundRobin spreads
// them evenly over the partitions, else they are keyed like every other
// measurement.
func (b *broker) fill(ctx context.Context, topic string, data *dataset, n int, roundRobin bool) error {
	opts := b.kgoProducerOpts()
	if roundRobin {
		opts = append(opts, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for i := 0; i < n; i++ {
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: data.key(i), Value: data.value}, func(_ *kgo.Record, err error) {
			if err != nil && failed.Add(1) == 1 {
				firstErr.Store(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		return fmt.Errorf("fill %s: %d produces failed: %v", topic, failed.Load(), firstErr.Load())
	}
	return nil
}

// dataset holds the keys and the value every client sends: 1024 keys
// ("user-0000"…), as a chat service keys by user, and one value.
type dataset struct {
	keys  [][]byte
	value []byte
}

func newDataset(size int) *dataset {
	d := &dataset{value: make([]byte, size)}
	_, _ = rand.Read(d.value) // incompressible
	for i := 0; i < 1024; i++ {
		d.keys = append(d.keys, fmt.Appendf(nil, "user-%04d", i))
	}
	return d
}

func (d *dataset) key(i int) []byte { return d.keys[i%len(d.keys)] }

// machine describes where the run happened.
type machine struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	Broker     string `json:"broker"`
	Brokers    string `json:"brokers"`
	Clients    string `json:"clients"`
}

func describeMachine(b *broker) machine {
	m := machine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(), Brokers: strings.Join(b.brokers, ",")}
	if fh, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		_ = fh.Close()
	}
	vers := map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			vers[d.Path] = d.Version
		}
	}
	m.Clients = fmt.Sprintf("franz-go %s, kafka-go %s, sarama %s",
		vers["github.com/twmb/franz-go"], vers["github.com/segmentio/kafka-go"], vers["github.com/IBM/sarama"])
	if b.real {
		m.Broker = "Apache Kafka " + kafkaVersion(b.f.kafkaScript)
	} else {
		m.Broker = "kfake (in-process) " + vers["github.com/twmb/franz-go/pkg/kfake"]
	}
	return m
}

func kafkaVersion(script string) string {
	out, err := exec.Command("bash", script, "version").Output()
	if err != nil {
		return "(unknown version)"
	}
	return strings.TrimSpace(string(out))
}

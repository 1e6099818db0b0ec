// Package mqtest is a test kit for services that use mq: a Kafka broker
// (franz-go's in-process kfake cluster, or real brokers named by
// $MQ_TEST_BROKERS) and an in-memory config center already holding an mq
// configuration that points at it. It works from a plain test (New), from
// a main (Start), and in an fx app (Kafka.FxOptions).
//
//	k := mqtest.New(t)
//	topic := k.NewTopic(t, 6)
//	p, err := mq.NewProducer(ctx, "svc", k.Options()...)
package mqtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/coord"
	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/fx"
)

// EnvBrokers names real brokers (comma separated host:port) to test
// against instead of an in-process cluster.
const EnvBrokers = "MQ_TEST_BROKERS"

// Env is the config environment mqtest writes its documents under.
const Env = "dev"

// Kafka is a broker and a config center that points at it.
type Kafka struct {
	// Brokers are the bootstrap addresses.
	Brokers []string
	// Provider is an in-memory config center holding the configuration
	// under "dev/global/kafka".
	Provider coord.Provider
	// Cluster is the in-process cluster, nil on real brokers.
	Cluster *kfake.Cluster

	cl    *kgo.Client
	admin *kadm.Client
}

type options struct {
	partitions int32
	global     map[string]any
	brokers    []string
}

// Option configures Start and New.
type Option func(*options)

// WithDefaultPartitions sets the partition count of auto-created topics
// (in-process cluster only), overriding the default of 6.
func WithDefaultPartitions(n int32) Option { return func(o *options) { o.partitions = n } }

// WithGlobalConfig lays doc over the shared configuration mqtest writes
// (see DefaultConfig), field by field.
func WithGlobalConfig(doc map[string]any) Option {
	return func(o *options) { o.global = merge(o.global, doc) }
}

// WithBrokers uses these brokers, overriding the default of
// $MQ_TEST_BROKERS, else an in-process cluster.
func WithBrokers(brokers ...string) Option { return func(o *options) { o.brokers = brokers } }

// DefaultConfig is the shared configuration mqtest writes, without its
// brokers: timeouts short enough for tests.
func DefaultConfig() map[string]any {
	return map[string]any{
		"dial_timeout": "10s",
		"producer": map[string]any{
			"close_timeout": "20s",
		},
		"consumer": map[string]any{
			"commit_interval":    "100ms",
			"session_timeout":    "6s",
			"heartbeat_interval": "200ms",
			"rebalance_timeout":  "10s",
			"close_timeout":      "20s",
		},
	}
}

// Start starts an in-process cluster (or connects to $MQ_TEST_BROKERS)
// and an in-memory config center. Close releases both.
func Start(opts ...Option) (*Kafka, error) {
	o := options{partitions: 6, global: DefaultConfig()}
	if env := os.Getenv(EnvBrokers); env != "" {
		o.brokers = strings.Split(env, ",")
	}
	for _, opt := range opts {
		opt(&o)
	}
	k := &Kafka{Provider: coord.NewMemoryProvider()}
	if len(o.brokers) == 0 {
		c, err := kfake.NewCluster(
			kfake.NumBrokers(1),
			kfake.AllowAutoTopicCreation(),
			kfake.DefaultNumPartitions(int(o.partitions)),
		)
		if err != nil {
			return nil, fmt.Errorf("mqtest: start in-process cluster: %w", err)
		}
		k.Cluster = c
		k.Brokers = c.ListenAddrs()
	} else {
		k.Brokers = o.brokers
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...))
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("mqtest: client: %w", err)
	}
	k.cl, k.admin = cl, kadm.NewClient(cl)
	global := merge(o.global, map[string]any{"brokers": k.Brokers})
	if err := k.Provider.Config().Set(context.Background(), Env+"/global/kafka", global); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// New is Start for a test: it fails t on error and closes at cleanup.
func New(t testing.TB, opts ...Option) *Kafka {
	t.Helper()
	k, err := Start(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// Close stops the in-process cluster and the clients mqtest opened.
func (k *Kafka) Close() {
	if k.cl != nil {
		k.cl.Close()
	}
	if k.Cluster != nil {
		k.Cluster.Close()
	}
	if k.Provider != nil {
		_ = k.Provider.Close()
	}
}

// Real reports whether k talks to real brokers.
func (k *Kafka) Real() bool { return k.Cluster == nil }

// Options returns the mq options that point mq at k's config center.
func (k *Kafka) Options() []mq.Option {
	return []mq.Option{mq.WithCoordProvider(k.Provider), mq.WithEnv(Env)}
}

// FxOptions supplies k's config center to an fx app as its coord.Provider.
func (k *Kafka) FxOptions() fx.Option {
	return fx.Supply(fx.Annotate(k.Provider, fx.As(new(coord.Provider))))
}

// SetServiceConfig writes the service's own document, whose fields
// override the shared one's.
func (k *Kafka) SetServiceConfig(service string, doc any) error {
	return k.Provider.Config().Set(context.Background(), Env+"/"+service+"/kafka", doc)
}

// SetGlobalConfig lays doc over the shared document.
func (k *Kafka) SetGlobalConfig(doc map[string]any) error {
	var cur map[string]any
	if err := k.Provider.Config().Get(context.Background(), Env+"/global/kafka", &cur); err != nil {
		return err
	}
	return k.Provider.Config().Set(context.Background(), Env+"/global/kafka", merge(cur, doc))
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// UniqueName returns a topic or group name unique to this run, derived
// from the test's name.
func UniqueName(t testing.TB) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := unsafeChars.ReplaceAllString(t.Name(), "-")
	if len(name) > 150 {
		name = name[:150]
	}
	return "mqtest-" + name + "-" + hex.EncodeToString(b)
}

// CreateTopic creates a topic (replication factor: the broker's default).
func (k *Kafka) CreateTopic(ctx context.Context, topic string, partitions int32) error {
	_, err := k.admin.CreateTopic(ctx, partitions, -1, nil, topic)
	if err != nil {
		return fmt.Errorf("mqtest: create topic %s: %w", topic, err)
	}
	// Wait until the topic's partitions have leaders.
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := k.admin.ListTopics(ctx, topic)
		if err == nil {
			if td, ok := md[topic]; ok && td.Err == nil && len(td.Partitions) == int(partitions) {
				ready := true
				for _, p := range td.Partitions {
					ready = ready && p.Leader >= 0 && p.Err == nil
				}
				if ready {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mqtest: topic %s has no leaders after 30s", topic)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NewTopic creates a topic with a unique name and returns the name.
func (k *Kafka) NewTopic(t testing.TB, partitions int32) string {
	t.Helper()
	topic := UniqueName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := k.CreateTopic(ctx, topic, partitions); err != nil {
		t.Fatal(err)
	}
	return topic
}

// ReadAll reads every record of topic, from the start to the end offsets
// the topic has when ReadAll is called.
func (k *Kafka) ReadAll(ctx context.Context, topic string) ([]*kgo.Record, error) {
	ends, err := k.admin.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("mqtest: end offsets of %s: %w", topic, err)
	}
	starts, err := k.admin.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("mqtest: start offsets of %s: %w", topic, err)
	}
	want := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		s, _ := starts.Lookup(o.Topic, o.Partition)
		if o.Offset > s.Offset {
			want[o.Partition] = o.Offset
			parts[o.Partition] = kgo.NewOffset().At(s.Offset)
		}
	})
	if len(want) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("mqtest: read %s: %d partitions not read to the end: %w", topic, len(want), err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil && !errors.Is(ferr, context.Canceled) {
			return out, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			out = append(out, r)
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return out, nil
}

// Committed returns the offsets group has committed for topic, by partition.
// A group the broker does not know (no member ever committed, and none is
// left) has committed nothing: the in-process broker answers
// GROUP_ID_NOT_FOUND where Kafka answers with no offsets.
func (k *Kafka) Committed(ctx context.Context, group, topic string) (map[int32]int64, error) {
	offs, err := k.admin.FetchOffsetsForTopics(ctx, group, topic)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out, nil
}

// Admin returns a kadm client on k's brokers.
func (k *Kafka) Admin() *kadm.Client { return k.admin }

func merge(base, over map[string]any) map[string]any {
	// Round-trip through JSON so that nested documents of any map type merge.
	norm := func(m map[string]any) map[string]any {
		if m == nil {
			return map[string]any{}
		}
		b, _ := json.Marshal(m)
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		return out
	}
	var rec func(a, b map[string]any) map[string]any
	rec = func(a, b map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range a {
			out[k] = v
		}
		for k, v := range b {
			if am, ok := out[k].(map[string]any); ok {
				if bm, ok := v.(map[string]any); ok {
					out[k] = rec(am, bm)
					continue
				}
			}
			out[k] = v
		}
		return out
	}
	return rec(norm(base), norm(over))
}

package mq_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
)

// Interop with a client nobody here wrote: kcat (librdkafka). The tests run
// on whichever broker mqtest gives (in-process or $MQ_TEST_BROKERS) and skip
// when kcat is not installed (apt-get install kcat).

func kcat(t *testing.T, k *mqtest.Kafka, stdin []byte, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (apt-get install kcat): interop with librdkafka not tested")
	}
	ctx := testCtx(t)
	cmd := exec.CommandContext(ctx, path, append([]string{"-b", strings.Join(k.Brokers, ","), "-X", "broker.address.family=v4"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// interopMessages are keys and values with multi-byte UTF-8, spaces,
// punctuation and (for values) control bytes that are not the delimiters.
func interopMessages() []struct{ key, value string } {
	var out []struct{ key, value string }
	for i := range 60 {
		out = append(out, struct{ key, value string }{
			key:   fmt.Sprintf("用户-%d key with spaces/%d", i%7, i%7),
			value: fmt.Sprintf("payload %d: ünïcødé ✓ \t tab \x01\x02\x7f {\"json\": [%d]}", i, i),
		})
	}
	return out
}

func TestInteropKcatProducesMqConsumes(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 4)
	msgs := interopMessages()
	var in bytes.Buffer
	for _, m := range msgs {
		in.WriteString(m.key + "\x1f" + m.value + "\x1e")
	}
	// murmur2_random is Kafka's Java (and franz-go's) key partitioning.
	kcat(t, k, in.Bytes(), "-P", "-t", topic, "-K", "\x1f", "-D", "\x1e",
		"-H", "trace_id=trace-from-kcat", "-H", "source=librdkafka ✓", "-X", "partitioner=murmur2_random")

	var mu sync.Mutex
	var got []*mq.Message
	c := newConsumer(t, k, "svc-c", mqtest.UniqueName(t))
	s := subscribe(t, c, []string{topic}, func(ctx context.Context, msg *mq.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, msg)
		return nil
	})
	eventually(t, "kcat's messages", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= len(msgs) })
	s.close(t)

	want := map[string]string{}
	for _, m := range msgs {
		want[m.value] = m.key
	}
	for _, m := range got {
		key, ok := want[string(m.Value)]
		if !ok || string(m.Key) != key {
			t.Fatalf("got key %q value %q: not what kcat sent", m.Key, m.Value)
		}
		if string(m.Headers["trace_id"]) != "trace-from-kcat" || string(m.Headers["source"]) != "librdkafka ✓" || len(m.Headers) != 2 {
			t.Fatalf("headers %q", m.Headers)
		}
		delete(want, string(m.Value))
	}
	if len(want) != 0 || len(got) != len(msgs) {
		t.Fatalf("%d of kcat's messages missing, %d received", len(want), len(got))
	}
}

// kcatMessage is kcat's -J output.
type kcatMessage struct {
	Topic     string   `json:"topic"`
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	Key       *string  `json:"key"`
	Payload   *string  `json:"payload"`
	Headers   []string `json:"headers"`
}

func TestInteropMqProducesKcatConsumes(t *testing.T) {
	k := mqtest.New(t)
	const partitions = 4
	topic := k.NewTopic(t, partitions)
	msgs := interopMessages()
	p := newProducer(t, k, "svc-p")
	for i, m := range msgs {
		err := p.SendSync(testCtx(t), &mq.Message{Topic: topic, Key: []byte(m.key), Value: []byte(m.value),
			Headers: map[string][]byte{"trace_id": []byte(fmt.Sprintf("trace-%d", i)), "zz": []byte("last ✓"), "aa": []byte("first")}})
		if err != nil {
			t.Fatal(err)
		}
	}
	out := kcat(t, k, nil, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-J")
	var got []kcatMessage
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var m kcatMessage
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("kcat line %q: %v", line, err)
		}
		got = append(got, m)
	}
	if len(got) != len(msgs) {
		t.Fatalf("kcat read %d messages, want %d", len(got), len(msgs))
	}
	want := map[string]string{}
	for _, m := range msgs {
		want[m.value] = m.key
	}
	for _, m := range got {
		if m.Key == nil || m.Payload == nil || want[*m.Payload] != *m.Key {
			t.Fatalf("kcat read key %v value %v", m.Key, m.Payload)
		}
		if wantP := int32(murmur2([]byte(*m.Key))&0x7fffffff) % partitions; m.Partition != wantP {
			t.Errorf("key %q on partition %d, Kafka's partitioner says %d", *m.Key, m.Partition, wantP)
		}
		// Headers arrive sorted by key, values byte-identical.
		if len(m.Headers) != 6 || m.Headers[0] != "aa" || m.Headers[1] != "first" || m.Headers[2] != "trace_id" ||
			!strings.HasPrefix(m.Headers[3], "trace-") || m.Headers[4] != "zz" || m.Headers[5] != "last ✓" {
			t.Errorf("headers %q", m.Headers)
		}
		delete(want, *m.Payload)
	}
	if len(want) != 0 {
		keys := make([]string, 0, len(want))
		for v := range want {
			keys = append(keys, v)
		}
		sort.Strings(keys)
		t.Fatalf("missing %v", keys)
	}
}

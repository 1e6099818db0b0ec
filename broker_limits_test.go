package mq_test

import (
	"errors"
	"testing"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// The broker's own message size limit (a topic's max.message.bytes) is
// below mq's: the broker refuses the message and the error reaches
// SendSync and the Send callback; messages around it are delivered.
// Only a real broker enforces it.
func TestBrokerRefusesMessageAboveTopicLimit(t *testing.T) {
	k := mqtest.New(t)
	if !k.Real() {
		t.Skip("the in-process broker does not enforce max.message.bytes; run with MQ_TEST_BROKERS set")
	}
	topic := mqtest.UniqueName(t)
	ctx := testCtx(t)
	if _, err := k.Admin().CreateTopic(ctx, 1, -1, map[string]*string{"max.message.bytes": kadm.StringPtr("4096")}, topic); err != nil {
		t.Fatal(err)
	}
	if err := k.SetServiceConfig("svc-big", map[string]any{"producer": map[string]any{"compression": "none"}}); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, k, "svc-big")
	eventually(t, "the topic to take writes", func() bool {
		return p.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte("small-0")}) == nil
	})
	err := p.SendSync(ctx, &mq.Message{Topic: topic, Value: make([]byte, 64<<10)})
	if !errors.Is(err, kerr.MessageTooLarge) && !errors.Is(err, kerr.RecordListTooLarge) {
		t.Fatalf("SendSync of 64KiB to a topic limited to 4KiB = %v", err)
	}
	done := make(chan error, 1)
	p.Send(ctx, &mq.Message{Topic: topic, Value: make([]byte, 64<<10)}, func(err error) { done <- err })
	if err := <-done; err == nil {
		t.Fatal("Send of 64KiB to a topic limited to 4KiB succeeded")
	}
	if err := p.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte("small-1")}); err != nil {
		t.Fatalf("a small message after the refused ones: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := k.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, r := range recs {
		vals = append(vals, string(r.Value))
	}
	if len(vals) < 2 || vals[len(vals)-1] != "small-1" {
		t.Fatalf("topic holds %q", vals)
	}
}

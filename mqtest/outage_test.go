package mqtest_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
)

// An Outage holds, restores and cuts one producer's brokers, on the
// in-process broker and on a real one ($MQ_TEST_BROKERS), while mqtest's own
// client goes on reading them.
func TestOutage(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 1) // one partition: acknowledgements in send order
	if err := k.SetServiceConfig("outage", map[string]any{
		"dial_timeout": "1s",
		"producer":     map[string]any{"close_timeout": "3s"},
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := mqtest.NewOutage()
	opts := append(k.Options(), o.Option())
	p, err := mq.NewProducer(ctx, "outage", opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	send := func(v string, d time.Duration) error {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return p.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte(v)})
	}

	if err := send("up", time.Minute); err != nil {
		t.Fatalf("SendSync with the broker up: %v", err)
	}
	o.Hold()
	if err := send("held", 500*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendSync while held = %v; want no acknowledgement by its deadline", err)
	}
	o.Restore()
	if err := send("restored", time.Minute); err != nil {
		t.Fatalf("SendSync after Restore: %v", err)
	}
	recs, err := k.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, string(r.Value))
	}
	// The held message was not lost: it went out again once restored.
	if want := []string{"up", "held", "restored"}; !slices.Equal(got, want) {
		t.Fatalf("topic holds %q; want %q", got, want)
	}

	o.Cut()
	if err := send("cut", 500*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendSync while cut = %v; want no acknowledgement by its deadline", err)
	}
	if _, err := mq.NewProducer(ctx, "outage", opts...); !errors.Is(err, mq.ErrBrokersUnreachable) {
		t.Fatalf("NewProducer while cut = %v; want ErrBrokersUnreachable", err)
	}
	began := time.Now()
	if err := p.Close(); err == nil {
		t.Errorf("Close with a message buffered and the broker cut = nil; want the flush's error")
	}
	if took := time.Since(began); took > 3*time.Second+2*time.Second {
		t.Errorf("Close took %s, close_timeout 3s", took)
	}
	// The other clients of the broker were not affected.
	if _, err := k.ReadAll(ctx, topic); err != nil {
		t.Fatalf("mqtest's own client while the outage cuts the producer: %v", err)
	}
}

package reliability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
)

// Scenario 7: hostile input across the API and the configuration. Each
// gets its typed error (errors.Is), nothing panics, and nothing accepted
// before, between or after them is lost: a producer sends a good message
// before each case and a consumer of the topic runs throughout.
//
// Messages with odd but legal content are accepted and must round-trip
// byte for byte: a message key that is not UTF-8 (Kafka keys are bytes),
// nil key and value, binary header values.
func TestBadInput(t *testing.T) {
	k := mqtest.New(t)
	topic := k.NewTopic(t, 3)
	start := time.Now()
	const maxBytes = 4096
	if err := k.SetServiceConfig("bad-input", map[string]any{"producer": map[string]any{"max_message_bytes": maxBytes}}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	p, err := mq.NewProducer(ctx, "bad-input", k.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })

	l := newTally()
	var mu sync.Mutex
	received := map[string]*mq.Message{} // by value
	group := mqtest.UniqueName(t)
	c, err := mq.NewConsumer(ctx, "bad-input", group, k.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	subDone := make(chan error, 1)
	go func() {
		subDone <- c.Subscribe(context.Background(), []string{topic}, func(ctx context.Context, msg *mq.Message) error {
			mu.Lock()
			received[string(msg.Value)] = msg
			mu.Unlock()
			l.process(string(msg.Value))
			return nil
		})
	}()
	t.Cleanup(func() { _ = c.Close(); <-subDone })

	good := 0
	var goodWG sync.WaitGroup
	sendGood := func() {
		v := id(good)
		good++
		l.send()
		goodWG.Add(1)
		p.Send(ctx, &mq.Message{Topic: topic, Key: []byte("good"), Value: []byte(v)}, func(err error) {
			l.result(v, err)
			goodWG.Done()
		})
	}
	// send tries msg with SendSync and with Send: both must give the same
	// verdict, Send's callback exactly once and before Send returns when
	// the message is refused.
	send := func(sctx context.Context, msg *mq.Message) error {
		err := p.SendSync(sctx, msg)
		var cbErr error
		calls := 0
		done := make(chan struct{})
		p.Send(sctx, msg, func(e error) { cbErr = e; calls++; close(done) })
		if err != nil {
			if calls != 1 || !sameKind(err, cbErr) {
				return fmt.Errorf("SendSync: %w; but Send's callback ran %d times before Send returned, with %v", err, calls, cbErr)
			}
			return err
		}
		select {
		case <-done:
		case <-time.After(waitLong):
			return errors.New("Send's callback never ran")
		}
		if cbErr != nil {
			return fmt.Errorf("SendSync accepted the message, Send's callback got %w", cbErr)
		}
		return nil
	}
	// accepted messages with odd content, checked after the consumer got them
	odd := map[string]*mq.Message{}
	sendOdd := func(sctx context.Context, prefix string, msg *mq.Message) error {
		msg.Value = append([]byte(prefix), msg.Value...)
		msg.Topic = topic
		v := string(msg.Value)
		odd[v] = msg
		l.send()
		err := p.SendSync(sctx, msg)
		l.result(v, err)
		return err
	}

	closedProducer, err := mq.NewProducer(ctx, "bad-input", k.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := closedProducer.Close(); err != nil {
		t.Fatal(err)
	}
	closedConsumer, err := mq.NewConsumer(ctx, "bad-input", mqtest.UniqueName(t), k.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := closedConsumer.Close(); err != nil {
		t.Fatal(err)
	}
	noop := func(context.Context, *mq.Message) error { return nil }
	hugeHeaders := map[string][]byte{}
	for i := range 10000 {
		hugeHeaders["h"+strconv.Itoa(i)] = nil
	}

	type tcase struct {
		name string
		run  func() error
		want error // nil: accepted
	}
	cases := []tcase{
		// Producer API.
		{"nil message", func() error { return send(ctx, nil) }, mq.ErrNilMessage},
		{"empty topic", func() error { return send(ctx, &mq.Message{Value: []byte("x")}) }, mq.ErrEmptyTopic},
		{"topic with non-ASCII letters", func() error { return send(ctx, &mq.Message{Topic: "тема", Value: []byte("x")}) }, mq.ErrInvalidTopic},
		{"topic of 250 bytes", func() error { return send(ctx, &mq.Message{Topic: strings.Repeat("t", 250)}) }, mq.ErrInvalidTopic},
		{"topic with a NUL byte", func() error { return send(ctx, &mq.Message{Topic: topic + "\x00"}) }, mq.ErrInvalidTopic},
		{"oversized value", func() error { return send(ctx, &mq.Message{Topic: topic, Value: make([]byte, maxBytes+1)}) }, mq.ErrMessageTooLarge},
		{"oversized key", func() error { return send(ctx, &mq.Message{Topic: topic, Key: make([]byte, 1<<20)}) }, mq.ErrMessageTooLarge},
		{"map of 10,000 headers", func() error { return send(ctx, &mq.Message{Topic: topic, Headers: hugeHeaders}) }, mq.ErrMessageTooLarge},
		{"header key not UTF-8", func() error {
			return send(ctx, &mq.Message{Topic: topic, Headers: map[string][]byte{"ok": nil, "\xc3\x28": []byte("v")}})
		}, mq.ErrInvalidHeader},
		{"empty header key", func() error { return send(ctx, &mq.Message{Topic: topic, Headers: map[string][]byte{"": []byte("v")}}) }, mq.ErrInvalidHeader},
		{"Send after Close", func() error { return sendOn(closedProducer, &mq.Message{Topic: topic, Value: []byte("late")}) }, mq.ErrClosed},
		{"ctx already cancelled", func() error {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			return send(cctx, &mq.Message{Topic: topic, Key: []byte("k"), Value: []byte("never")})
		}, context.Canceled},
		// Accepted, must round-trip.
		{"message key not UTF-8", func() error {
			return sendOdd(ctx, "odd-key", &mq.Message{Key: []byte{0xff, 0xfe, 0x00, 0xc3, 0x28}, Value: []byte{0x80}})
		}, nil},
		{"nil key and value", func() error { return sendOdd(ctx, "odd-nil", &mq.Message{}) }, nil},
		{"binary header values", func() error {
			return sendOdd(ctx, "odd-hdr", &mq.Message{Headers: map[string][]byte{"bin": {0, 0xff, 0}, "empty": {}, "ключ": []byte("значение")}})
		}, nil},
		{"nil ctx", func() error { return sendOdd(nil, "odd-nilctx", &mq.Message{Key: []byte("k")}) }, nil},
		// Consumer API.
		{"Subscribe nil callback", func() error { return subscribeOnce(t, k, topic, nil, nil) }, mq.ErrNilCallback},
		{"Subscribe no topics", func() error { return subscribeOnce(t, k, "", nil, noop) }, mq.ErrNoTopics},
		{"Subscribe empty topic name", func() error { return subscribeOnce(t, k, topic, []string{topic, ""}, noop) }, mq.ErrEmptyTopic},
		{"Subscribe invalid topic name", func() error { return subscribeOnce(t, k, topic, []string{"a/b"}, noop) }, mq.ErrInvalidTopic},
		{"Subscribe twice", func() error { return c.Subscribe(ctx, []string{topic}, noop) }, mq.ErrAlreadySubscribed},
		{"Subscribe after Close", func() error { return closedConsumer.Subscribe(ctx, []string{topic}, noop) }, mq.ErrClosed},
		// Constructors.
		{"empty service name", func() error { return build(ctx, "", "g", k.Options()) }, mq.ErrInvalidArgument},
		{"service name with a slash", func() error { return build(ctx, "a/b", "g", k.Options()) }, mq.ErrInvalidArgument},
		{"empty group id", func() error { _, err := mq.NewConsumer(ctx, "bad-input", "", k.Options()...); return err }, mq.ErrInvalidArgument},
		{"group id with a newline", func() error { _, err := mq.NewConsumer(ctx, "bad-input", "g\n1", k.Options()...); return err }, mq.ErrInvalidArgument},
		{"nil coord provider", func() error { return build(ctx, "bad-input", "g", []mq.Option{mq.WithCoordProvider(nil)}) }, mq.ErrNoCoordProvider},
		{"environment without documents", func() error {
			return build(ctx, "bad-input", "g", append(k.Options(), mq.WithEnv("void")))
		}, mq.ErrConfigNotFound},
		{"nil option", func() error { return build(ctx, "bad-input", "g", append(k.Options(), nil)) }, nil},
	}
	// Configuration documents, as the config center may hold them.
	configs := []struct {
		name  string
		doc   any // a string is stored as raw text
		field string
		want  error
	}{
		{"truncated JSON", `{"brokers": ["127.0.0.1:9092"], "producer": {"acks": "al`, "", mq.ErrInvalidConfig},
		{"malformed YAML", "brokers:\n  - a\n b: [", "", mq.ErrInvalidConfig},
		{"document is a list", `[1, 2, 3]`, "", mq.ErrInvalidConfig},
		{"document is a number", `42`, "", mq.ErrInvalidConfig},
		{"binary garbage", "\x00\xff\xfe{", "", mq.ErrInvalidConfig},
		{"brokers is a number", map[string]any{"brokers": 5}, "brokers", mq.ErrInvalidConfig},
		{"concurrency is a string", map[string]any{"consumer": map[string]any{"concurrency": "many"}}, "consumer.concurrency", mq.ErrInvalidConfig},
		{"duration is a number", map[string]any{"consumer": map[string]any{"commit_interval": 100}}, "consumer.commit_interval", mq.ErrInvalidConfig},
		{"duration is prose", map[string]any{"producer": map[string]any{"linger": "a fortnight"}}, "producer.linger", mq.ErrInvalidConfig},
		{"negative duration", map[string]any{"producer": map[string]any{"delivery_timeout": "-1s"}}, "producer.delivery_timeout", mq.ErrInvalidConfig},
		{"absurd duration", map[string]any{"consumer": map[string]any{"session_timeout": "10000h"}}, "consumer.session_timeout", mq.ErrInvalidConfig},
		{"zero buffer", map[string]any{"producer": map[string]any{"max_buffered_records": 0}}, "producer.max_buffered_records", mq.ErrInvalidConfig},
		{"absurd integer", map[string]any{"consumer": map[string]any{"max_poll_records": 1e15}}, "consumer.max_poll_records", mq.ErrInvalidConfig},
		{"negative integer", map[string]any{"consumer": map[string]any{"concurrency": -1}}, "consumer.concurrency", mq.ErrInvalidConfig},
		{"unknown acks", map[string]any{"producer": map[string]any{"acks": "most"}}, "producer.acks", mq.ErrInvalidConfig},
		{"unknown compression", map[string]any{"producer": map[string]any{"compression": "brotli"}}, "producer.compression", mq.ErrInvalidConfig},
		{"unknown offset reset", map[string]any{"consumer": map[string]any{"offset_reset": "middle"}}, "consumer.offset_reset", mq.ErrInvalidConfig},
		{"unknown SASL mechanism", map[string]any{"security": map[string]any{"sasl": map[string]any{"mechanism": "kerberos", "username": "u", "password": "hunter2-secret"}}}, "security.sasl.mechanism", mq.ErrInvalidConfig},
		{"idempotence without acks all", map[string]any{"producer": map[string]any{"acks": "leader"}}, "producer.idempotent", mq.ErrInvalidConfig},
		{"heartbeat not below session", map[string]any{"consumer": map[string]any{"heartbeat_interval": "10s", "session_timeout": "10s"}}, "consumer.heartbeat_interval", mq.ErrInvalidConfig},
		{"reserved field", map[string]any{"consumer": map[string]any{"dead_letter": map[string]any{"topic": "dlq"}}}, "consumer.dead_letter", mq.ErrInvalidConfig},
		{"empty broker list", map[string]any{"brokers": []string{}}, "brokers", mq.ErrInvalidConfig},
		{"broker without a port", map[string]any{"brokers": []string{"localhost"}}, "brokers[0]", mq.ErrInvalidConfig},
		{"broker port out of range", map[string]any{"brokers": []string{"127.0.0.1:99999"}}, "brokers[0]", mq.ErrInvalidConfig},
		{"broker URL instead of host:port", map[string]any{"brokers": []string{"kafka://127.0.0.1:9092"}}, "brokers[0]", mq.ErrInvalidConfig},
		{"unreachable broker", map[string]any{"brokers": []string{"127.0.0.1:1"}, "dial_timeout": "300ms"}, "", mq.ErrBrokersUnreachable},
	}
	for i, cc := range configs {
		service := "bad-cfg-" + strconv.Itoa(i)
		if err := k.SetServiceConfig(service, cc.doc); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, tcase{"config: " + cc.name, func() error {
			perr := build(ctx, service, "", k.Options())
			cerr := build(ctx, service, "g", k.Options())
			if !sameKind(perr, cerr) {
				return fmt.Errorf("producer: %v; consumer: %v", perr, cerr)
			}
			var ce *mq.ConfigError
			if cc.want == mq.ErrInvalidConfig {
				switch {
				case !errors.As(perr, &ce):
					return fmt.Errorf("not a *mq.ConfigError: %w", perr)
				case ce.Field != cc.field:
					return fmt.Errorf("ConfigError field %q, want %q: %w", ce.Field, cc.field, perr)
				case !strings.Contains(ce.Key, service):
					return fmt.Errorf("ConfigError key %q does not name the service document: %w", ce.Key, perr)
				}
			}
			if strings.Contains(fmt.Sprint(perr), "hunter2") {
				return fmt.Errorf("the error leaks the SASL password: %w", perr)
			}
			return perr
		}, cc.want})
	}

	var problems []string
	for _, tc := range cases {
		sendGood()
		panicked, err := protect(tc.run)
		switch {
		case panicked != nil:
			problems = append(problems, fmt.Sprintf("%s: panicked: %v", tc.name, panicked))
		case tc.want == nil && err != nil:
			problems = append(problems, fmt.Sprintf("%s: refused: %v", tc.name, err))
		case tc.want != nil && !errors.Is(err, tc.want):
			problems = append(problems, fmt.Sprintf("%s: got %v, want %v", tc.name, err, tc.want))
		case err != nil && strings.TrimSpace(err.Error()) == "":
			problems = append(problems, fmt.Sprintf("%s: empty error text", tc.name))
		}
	}
	sendGood()
	goodWG.Wait()

	// Nothing accepted is lost; odd messages round-trip byte for byte.
	waitProcessed(t, l)
	mu.Lock()
	for v, want := range odd {
		got := received[v]
		l.mu.Lock()
		acked := l.acked[v]
		l.mu.Unlock()
		switch {
		case got == nil && acked:
			problems = append(problems, fmt.Sprintf("%s: acknowledged, never consumed", v))
		case got == nil:
			// not acknowledged (the cancelled ctx): may or may not arrive
		case !bytes.Equal(got.Key, want.Key):
			problems = append(problems, fmt.Sprintf("%s: key %x, sent %x", v, got.Key, want.Key))
		case !bytes.Equal(got.Value, want.Value):
			problems = append(problems, fmt.Sprintf("%s: value %x, sent %x", v, got.Value, want.Value))
		default:
			for hk, hv := range want.Headers {
				if !bytes.Equal(got.Headers[hk], hv) {
					problems = append(problems, fmt.Sprintf("%s: header %q = %x, sent %x", v, hk, got.Headers[hk], hv))
				}
			}
		}
	}
	mu.Unlock()
	sent, acked, failed, processed, lost, dup := l.figures()
	report(t, "bad_input", "broker", brokerKind(k), "cases", len(cases), "config_cases", len(configs), "good_sent", good,
		"sent", sent, "acked", acked, "failed", failed, "processed", processed, "lost", lost, "dup", dup, "took", time.Since(start))
	if len(problems) > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(problems, "\n"))
	}
	if lost != 0 {
		t.Errorf("%d accepted messages lost: %v", lost, l.lostIDs(10))
	}
}

// sameKind reports whether two errors match the same mq sentinel.
func sameKind(a, b error) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	for _, s := range []error{mq.ErrNilMessage, mq.ErrEmptyTopic, mq.ErrInvalidTopic, mq.ErrInvalidHeader, mq.ErrMessageTooLarge,
		mq.ErrClosed, mq.ErrInvalidArgument, mq.ErrNoCoordProvider, mq.ErrConfigNotFound, mq.ErrInvalidConfig, mq.ErrBrokersUnreachable,
		context.Canceled, context.DeadlineExceeded} {
		if errors.Is(a, s) != errors.Is(b, s) {
			return false
		}
	}
	return true
}

func sendOn(p mq.Producer, msg *mq.Message) error {
	err := p.SendSync(context.Background(), msg)
	var cbErr error
	p.Send(context.Background(), msg, func(e error) { cbErr = e })
	if !sameKind(err, cbErr) {
		return fmt.Errorf("SendSync: %v, Send: %v", err, cbErr)
	}
	return err
}

// build runs NewProducer (group "") or NewConsumer and closes what it built.
func build(ctx context.Context, service, group string, opts []mq.Option) error {
	if group == "" {
		p, err := mq.NewProducer(ctx, service, opts...)
		if err == nil {
			_ = p.Close()
		}
		return err
	}
	c, err := mq.NewConsumer(ctx, service, group, opts...)
	if err == nil {
		_ = c.Close()
	}
	return err
}

// subscribeOnce calls Subscribe on a new consumer that must refuse it.
func subscribeOnce(t testing.TB, k *mqtest.Kafka, topic string, topics []string, cb mq.ConsumeCallback) error {
	c, err := mq.NewConsumer(ctxFor(t), "bad-input", mqtest.UniqueName(t), k.Options()...)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Subscribe(ctx, topics, cb)
	if err == nil {
		return errors.New("Subscribe accepted the input and ran until its ctx ended")
	}
	return err
}

// protect runs f, turning a panic into a value.
func protect(f func() error) (panicked any, err error) {
	defer func() { panicked = recover() }()
	return nil, f()
}

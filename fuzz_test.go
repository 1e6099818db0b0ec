package mq

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// Fuzz targets of the reliability suite (issue 5). Their seed corpora are
// in testdata/fuzz/<FuzzName>/; CI runs each for a short fixed time:
//
//	go test -run '^$' -fuzz '^FuzzParseConfig$' -fuzztime 20s .
//	go test -run '^$' -fuzz '^FuzzMessageRoundTrip$' -fuzztime 20s .
//
// Without -fuzz, `go test` runs the seeds as ordinary tests.

// fuzzLogger discards the warnings parseConfig logs.
var fuzzLogger = clog.NewFromZap(zap.NewNop())

// FuzzParseConfig feeds arbitrary bytes to the config pipeline, as the
// shared and the service documents: decodeDocument and parseConfig never
// panic; every error is a *ConfigError that matches ErrInvalidConfig and
// names its document; an accepted configuration is valid, and decoding is
// deterministic.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range [][2]string{
		{`{"brokers": ["127.0.0.1:9092"]}`, ``},
		{`brokers: [kafka-1:9092, kafka-2:9092]`, "producer:\n  acks: leader\n  idempotent: false\n"},
		{`{"brokers": ["k:9092"], "consumer": {"commit_interval": "250ms", "concurrency": 8}}`, `{"consumer": {"session_timeout": "1s", "heartbeat_interval": "100ms"}}`},
		{`{"brokers": ["k:9092"], "security": {"sasl": {"mechanism": "plain", "username": "u", "password": "p"}}}`, `{"dial_timeout": "-1s"}`},
		{`{"brokers": ["k:9092"]}`, `{"producer": {"retry": {"max": 3}}}`},
		{`{"brokers": 5}`, `[1, 2]`},
		{`{"brokers": ["k:9092"`, `null`},
		{"brokers:\n  - a\n b: [", "\x00\xff"},
		{`{"brokers": ["k:9092"], "producer": {"linger": 1e400}}`, `{"consumer": {"max_poll_records": 1e15}}`},
		{`{"brokers": ["k:9092"], "a": {"b": {"c": {"d": [[[[{}]]]]}}}}`, `"just a string"`},
		{`&a [*a, *a]`, `{"brokers": ["[::1]:9092"]}`},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	const gkey, skey = "fuzz/global/kafka", "fuzz/svc/kafka"
	f.Fuzz(func(t *testing.T, global, service []byte) {
		gdoc, gerr := decodeDocument(gkey, global)
		sdoc, serr := decodeDocument(skey, service)
		for _, e := range []struct {
			err error
			key string
		}{{gerr, gkey}, {serr, skey}} {
			if e.err != nil {
				checkConfigError(t, e.err, e.key)
			}
		}
		if gerr != nil || serr != nil {
			return
		}
		cfg, err := parseConfig(gkey, gdoc, skey, sdoc, fuzzLogger)
		if err != nil {
			ce := checkConfigError(t, err, "")
			if ce.Key != gkey && ce.Key != skey && ce.Key != "(defaults)" {
				t.Fatalf("ConfigError names key %q", ce.Key)
			}
			return
		}
		if verr := cfg.validate(); verr != nil {
			t.Fatalf("accepted a configuration that does not validate: %v", verr)
		}
		if len(cfg.Brokers) == 0 {
			t.Fatal("accepted a configuration without brokers")
		}
		again, err := parseConfig(gkey, gdoc, skey, sdoc, fuzzLogger)
		if err != nil || !reflect.DeepEqual(again, cfg) {
			t.Fatalf("parsing the same documents twice differed: %v", err)
		}
		// An accepted configuration builds franz-go options without panicking.
		if _, err := clientOpts(cfg, fuzzLogger); err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("clientOpts: %v", err)
		}
		_ = producerOpts(cfg)
	})
}

func checkConfigError(t *testing.T, err error, key string) *ConfigError {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("error %v (%T) is not a *ConfigError matching ErrInvalidConfig", err, err)
	}
	if key != "" && ce.Key != key {
		t.Fatalf("ConfigError key %q, want %q", ce.Key, key)
	}
	if ce.Error() == "" || ce.Reason == "" {
		t.Fatalf("ConfigError without a reason: %#v", ce)
	}
	return ce
}

// FuzzMessageRoundTrip checks checkMessage on arbitrary messages (it never
// panics, and refuses exactly: a nil or empty or invalid topic, empty or
// non-UTF-8 header keys, more than maxBytes) and, for accepted messages,
// that toRecord then fromRecord keeps the key, the value and the headers
// byte for byte (the trace id from ctx is added only when the message has
// none), also through Kafka's record encoding.
func FuzzMessageRoundTrip(f *testing.F) {
	f.Add("orders", []byte("user-1"), []byte("hello"), "h1", []byte("v1"), "h2", []byte(nil), "trace-1", 1024)
	f.Add("gochat.messages.upstream", []byte{0xff, 0xfe, 0x00}, []byte(nil), "trace_id", []byte("from-header"), "bin", []byte{0, 1, 2}, "from-ctx", 1<<20)
	f.Add("", []byte(nil), []byte("x"), "", []byte("v"), "k", []byte("v"), "", 10)
	f.Add("a b", []byte("k"), []byte("v"), "\xc3\x28", []byte("v"), "ok", []byte("v"), "", 100)
	f.Add("..", []byte("k"), []byte("v"), "k", []byte("v"), "k", []byte("w"), "", 100)
	f.Add("t", []byte("0123456789"), []byte("0123456789"), "k", []byte("v"), "k2", []byte("v2"), "", 23)
	f.Add("t", []byte(""), []byte(""), "ключ", []byte("значение"), "", []byte(nil), "", 0)
	f.Fuzz(func(t *testing.T, topic string, key, value []byte, hk1 string, hv1 []byte, hk2 string, hv2 []byte, traceID string, maxBytes int) {
		var headers map[string][]byte
		if hk1 != "" || hk2 != "" || hv1 != nil {
			headers = map[string][]byte{hk1: hv1, hk2: hv2}
		}
		msg := &Message{Topic: topic, Key: key, Value: value, Headers: headers}
		err := checkMessage(msg, maxBytes)

		// The verdict, worked out independently.
		size := len(key) + len(value)
		badHeader := false
		for k, v := range headers {
			size += len(k) + len(v)
			badHeader = badHeader || k == "" || !utf8.ValidString(k)
		}
		switch {
		case checkTopic(topic) != nil:
			if err == nil {
				t.Fatalf("topic %q accepted", topic)
			}
			if !errors.Is(err, ErrEmptyTopic) && !errors.Is(err, ErrInvalidTopic) {
				t.Fatalf("topic %q: %v", topic, err)
			}
			return
		case badHeader:
			if !errors.Is(err, ErrInvalidHeader) {
				t.Fatalf("headers %q: got %v, want ErrInvalidHeader", headerKeys(headers), err)
			}
			return
		case size > maxBytes:
			if !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("%d bytes with max %d: got %v, want ErrMessageTooLarge", size, maxBytes, err)
			}
			return
		case err != nil:
			t.Fatalf("valid message refused: %v", err)
		}

		ctx := context.Background()
		if traceID != "" {
			ctx = clog.WithTraceID(ctx, traceID)
		}
		r := toRecord(ctx, msg)
		if r.Topic != topic {
			t.Fatalf("record topic %q", r.Topic)
		}
		for i := 1; i < len(r.Headers); i++ {
			if r.Headers[i-1].Key >= r.Headers[i].Key {
				t.Fatalf("record headers not sorted and unique: %v", r.Headers)
			}
		}
		want := map[string][]byte{}
		for k, v := range headers {
			want[k] = v
		}
		if _, ok := headers[TraceIDHeader]; !ok && clog.TraceIDFromContext(ctx) != "" {
			want[TraceIDHeader] = []byte(clog.TraceIDFromContext(ctx))
		}
		check := func(stage string, got *Message) {
			t.Helper()
			if !bytes.Equal(got.Key, key) || !bytes.Equal(got.Value, value) {
				t.Fatalf("%s: key %x value %x, sent %x %x", stage, got.Key, got.Value, key, value)
			}
			if len(got.Headers) != len(want) {
				t.Fatalf("%s: headers %q, want %q", stage, headerKeys(got.Headers), headerKeys(want))
			}
			for k, v := range want {
				gv, ok := got.Headers[k]
				if !ok || !bytes.Equal(gv, v) {
					t.Fatalf("%s: header %q = %x (present %v), want %x", stage, k, gv, ok, v)
				}
			}
		}
		check("in memory", fromRecord(r))

		// Through Kafka's record encoding, as a consumer reads it back.
		kr := kmsg.Record{Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kmsg.Header{Key: h.Key, Value: h.Value})
		}
		kr.Length = int32(len(kr.AppendTo(nil)) - 1) // everything after the length (a 1-byte varint 0)
		var decoded kmsg.Record
		if err := decoded.ReadFrom(kr.AppendTo(nil)); err != nil {
			t.Fatalf("decoding the encoded record: %v", err)
		}
		back := &kgo.Record{Topic: topic, Key: decoded.Key, Value: decoded.Value}
		for _, h := range decoded.Headers {
			back.Headers = append(back.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		wire := fromRecord(back)
		// The encoding does not tell nil from empty headers values; keys
		// and values keep nil vs empty.
		check("through the wire", wire)
		if (key == nil) != (wire.Key == nil) || (value == nil) != (wire.Value == nil) {
			t.Fatalf("nil and empty not kept apart: key %v/%v value %v/%v", key == nil, wire.Key == nil, value == nil, wire.Value == nil)
		}
		if traceIDOf(r) != string(want[TraceIDHeader]) {
			t.Fatalf("traceIDOf = %q, want %q", traceIDOf(r), want[TraceIDHeader])
		}
	})
}

func headerKeys(h map[string][]byte) string {
	var ks []string
	for k := range h {
		ks = append(ks, k)
	}
	return strings.Join(ks, ",")
}

package mq

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TraceIDHeader is the header that carries a message's trace id. Send adds
// it from ctx (clog.WithTraceID) when the message has none; a consumer's
// callback ctx carries it back.
const TraceIDHeader = "trace_id"

// maxTopicLen is Kafka's limit on topic names.
const maxTopicLen = 249

// checkMessage validates msg before it is accepted.
func checkMessage(msg *Message, maxBytes int) error {
	if msg == nil {
		return ErrNilMessage
	}
	if err := checkTopic(msg.Topic); err != nil {
		return err
	}
	return checkMessageBody(msg, maxBytes)
}

// checkMessageBody is checkMessage without the topic name's check.
func checkMessageBody(msg *Message, maxBytes int) error {
	size := len(msg.Key) + len(msg.Value)
	if len(msg.Headers) > 0 {
		for k, v := range msg.Headers {
			if k == "" || !utf8.ValidString(k) {
				return fmt.Errorf("%w: key %q on a message to %s (want non-empty UTF-8)", ErrInvalidHeader, k, msg.Topic)
			}
			size += len(k) + len(v)
		}
	}
	if size > maxBytes {
		return fmt.Errorf("%w: %d bytes of key, value and headers to %s, above producer.max_message_bytes %d", ErrMessageTooLarge, size, msg.Topic, maxBytes)
	}
	return nil
}

func checkTopic(topic string) error {
	if topic == "" {
		return ErrEmptyTopic
	}
	if len(topic) > maxTopicLen || topic == "." || topic == ".." {
		return fmt.Errorf("%w: %.60q", ErrInvalidTopic, topic)
	}
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %.60q (allowed: ASCII letters, digits, '.', '_', '-')", ErrInvalidTopic, topic)
		}
	}
	return nil
}

// toRecord converts msg; the trace id in ctx becomes a header when msg has
// none. Headers are sorted by key so that the bytes on the wire do not
// depend on map order. Key, Value and header values are not copied: the
// caller must not modify them until the message completes.
func toRecord(ctx context.Context, msg *Message) *kgo.Record {
	r := new(kgo.Record)
	fillRecord(r, ctx, msg)
	return r
}

// fillRecord is toRecord into a zero record the caller allocated.
func fillRecord(r *kgo.Record, ctx context.Context, msg *Message) {
	r.Topic, r.Key, r.Value = msg.Topic, msg.Key, msg.Value
	traceID := ""
	if len(msg.Headers) == 0 { // no map lookup: most messages have no headers
		traceID = clog.TraceIDFromContext(ctx)
	} else if _, ok := msg.Headers[TraceIDHeader]; !ok {
		traceID = clog.TraceIDFromContext(ctx)
	}
	n := len(msg.Headers)
	if traceID != "" {
		n++
	}
	if n == 0 {
		return
	}
	if cap(r.Headers) < n {
		r.Headers = make([]kgo.RecordHeader, 0, n)
	}
	for k, v := range msg.Headers {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: v})
	}
	if traceID != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: TraceIDHeader, Value: []byte(traceID)})
	}
	if len(r.Headers) > 1 {
		slices.SortFunc(r.Headers, func(a, b kgo.RecordHeader) int { return strings.Compare(a.Key, b.Key) })
	}
}

// fromRecord converts a consumed record. When a header key repeats, the
// last value wins.
func fromRecord(r *kgo.Record) *Message {
	m := new(Message)
	fillMessage(m, r)
	return m
}

// fillMessage is fromRecord into a zero Message the caller owns.
func fillMessage(m *Message, r *kgo.Record) {
	m.Topic, m.Key, m.Value = r.Topic, r.Key, r.Value
	if len(r.Headers) > 0 {
		m.Headers = make(map[string][]byte, len(r.Headers))
		for _, h := range r.Headers {
			m.Headers[h.Key] = h.Value
		}
	}
}

// traceIDOf returns the record's trace_id header.
func traceIDOf(r *kgo.Record) string {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == TraceIDHeader {
			return string(r.Headers[i].Value)
		}
	}
	return ""
}

// Package mq is gochat's one Kafka library: a Producer and a consumer-group
// Consumer on franz-go, configured from the coord config center, with
// at-least-once delivery by default.
//
// A service sends messages with a Producer:
//
//	producer, err := mq.NewProducer(ctx, "im-gateway", mq.WithLogger(logger))
//	if err != nil {
//		return err
//	}
//	defer producer.Close() // flushes what is buffered
//
//	producer.Send(ctx, &mq.Message{Topic: "gochat.messages.upstream", Key: userID, Value: data},
//		func(err error) { /* called exactly once */ })
//
// and receives them with a Consumer:
//
//	consumer, err := mq.NewConsumer(ctx, "im-logic", "im-logic-group")
//	if err != nil {
//		return err
//	}
//	defer consumer.Close() // finishes in-flight callbacks, commits, leaves the group
//	err = consumer.Subscribe(ctx, []string{"gochat.messages.upstream"},
//		func(ctx context.Context, msg *mq.Message) error { return handle(ctx, msg) })
//
// Configuration comes from the config center (see docs/config.md): business
// code never builds a config struct. In a go.uber.org/fx app, mq.Module wires
// both (see module.go).
//
// # Delivery promise
//
// Producer: acks=all and idempotence by default; SendSync returns once the
// broker acknowledged; Send never blocks past its ctx; Close flushes within a
// bounded time and every message accepted gets its callback.
//
// Consumer: at-least-once. An offset is committed only after its callback
// returned; records of one partition are handled in order, partitions
// concurrently; processed offsets are committed in the background, when a
// partition is revoked and on Close. A crash redelivers, never drops.
package mq

import (
	"context"
	"errors"
)

// Message is the standard cross-service message. Key chooses the partition:
// messages with the same Key go to the same partition, in order. Headers
// carry metadata such as trace_id.
type Message struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers map[string][]byte
}

// Producer sends messages. It is safe for concurrent use.
type Producer interface {
	// Send sends msg asynchronously and calls callback exactly once with
	// the result (nil once the broker acknowledged). It returns as soon as
	// the message is buffered; when the buffer is full it waits for room
	// until ctx ends, then calls callback with ctx's error. Errors found
	// before the message is accepted (ErrNilMessage, ErrClosed, …) reach
	// callback before Send returns. A nil callback is allowed; failures are
	// then logged. ctx only bounds the wait for buffer room: once accepted,
	// delivery is bounded by the configured delivery timeout. Callbacks
	// run one at a time, in completion order, on a goroutine of the
	// producer's: a slow callback delays the callbacks after it, never
	// delivery; one that panics is logged, and the others still run. A
	// Send racing with Close is either flushed by Close or
	// fails with ErrClosed. msg is not kept: the caller may reuse it once
	// Send returned, but not its Key, Value or header values until
	// callback ran.
	Send(ctx context.Context, msg *Message, callback func(error))

	// SendSync sends msg and waits until the broker acknowledged it or ctx
	// ended. An error from ctx means the outcome is unknown: the message may
	// still be delivered.
	SendSync(ctx context.Context, msg *Message) error

	// Close flushes every buffered message within the configured
	// producer.close_timeout, then closes. Messages still buffered at the
	// deadline fail with their callbacks. Later sends fail with ErrClosed.
	// Close is idempotent.
	Close() error
}

// ConsumeCallback handles one message. A returned error is logged with the
// message's topic, partition, offset and trace_id, and consumption goes on
// (the message counts as processed). A panic is recovered, logged and counted
// as an error. ctx carries the message's trace_id (clog.WithContext(ctx)
// logs it) and is cancelled when the message's partition is revoked or the
// consumer gives up waiting on Close; an error returned once ctx is cancelled
// leaves the message uncommitted, so it is delivered again. The callback may
// keep msg; its Key and Value share memory with the fetched batch.
type ConsumeCallback func(ctx context.Context, msg *Message) error

// Consumer is a member of a consumer group.
type Consumer interface {
	// Subscribe joins the group, consumes topics and calls callback for
	// every message. It blocks until ctx ends or Close is called, then
	// stops as Close does, and returns nil; it returns an error only when
	// consumption cannot go on (bad arguments, a fatal broker error).
	// A Consumer subscribes once.
	Subscribe(ctx context.Context, topics []string, callback ConsumeCallback) error

	// Close stops polling, lets in-flight callbacks finish (cancelling
	// their ctx at the configured consumer.close_timeout), commits what was
	// processed, and leaves the group. It is idempotent.
	Close() error
}

// Errors returned by mq, matched with errors.Is. Each is wrapped with
// context (the topic, the config key and field, …).
var (
	// ErrClosed: the Producer or Consumer was closed.
	ErrClosed = errors.New("mq: closed")
	// ErrNilMessage: Send or SendSync got a nil *Message.
	ErrNilMessage = errors.New("mq: nil message")
	// ErrEmptyTopic: a message without a topic, or an empty name in Subscribe's topic list.
	ErrEmptyTopic = errors.New("mq: empty topic")
	// ErrInvalidTopic: a topic name Kafka refuses (longer than 249 bytes, or
	// characters other than ASCII letters, digits, '.', '_' and '-').
	ErrInvalidTopic = errors.New("mq: invalid topic name")
	// ErrInvalidHeader: a header key that is empty or not valid UTF-8.
	ErrInvalidHeader = errors.New("mq: invalid header")
	// ErrMessageTooLarge: key, value and headers exceed producer.max_message_bytes.
	ErrMessageTooLarge = errors.New("mq: message too large")
	// ErrNilCallback: Subscribe got a nil callback.
	ErrNilCallback = errors.New("mq: nil callback")
	// ErrNoTopics: Subscribe got an empty topic list.
	ErrNoTopics = errors.New("mq: no topics")
	// ErrAlreadySubscribed: Subscribe was called a second time.
	ErrAlreadySubscribed = errors.New("mq: already subscribed")
	// ErrInvalidArgument: an empty service name or group id, a nil option value.
	ErrInvalidArgument = errors.New("mq: invalid argument")
	// ErrNoCoordProvider: no config center was given and none could be
	// reached from the environment (set COORD_ENDPOINTS or pass WithCoordProvider).
	ErrNoCoordProvider = errors.New("mq: no coord provider")
	// ErrConfigNotFound: neither the shared nor the service document exists.
	ErrConfigNotFound = errors.New("mq: config not found")
	// ErrInvalidConfig: a config document is malformed or a field is invalid;
	// the error names the key and the field (see *ConfigError).
	ErrInvalidConfig = errors.New("mq: invalid config")
	// ErrBrokersUnreachable: no configured broker answered within dial_timeout at construction.
	ErrBrokersUnreachable = errors.New("mq: brokers unreachable")
)

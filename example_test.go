package mq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"go.uber.org/fx"
)

// The examples run on mqtest's in-process broker and in-memory config
// center, or on real brokers when $MQ_TEST_BROKERS is set: so each one
// works on a topic and a group of its own.

// uniqueName returns prefix with a random suffix.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// newTopic creates a one-partition topic with a unique name on k's brokers.
func newTopic(k *mqtest.Kafka, prefix string) string {
	topic := uniqueName(prefix)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		log.Fatal(err)
	}
	return topic
}

func ExampleNewProducer() {
	k, err := mqtest.Start() // a broker, and a config center that points at it
	if err != nil {
		log.Fatal(err)
	}
	defer k.Close()
	topic := newTopic(k, "example-producer")
	ctx := context.Background()

	producer, err := mq.NewProducer(ctx, "im-gateway", k.Options()...)
	if err != nil {
		log.Fatal(err)
	}
	// Send returns once the message is buffered; its callback runs exactly once.
	delivered := make(chan error, 1)
	producer.Send(ctx, &mq.Message{Topic: topic, Key: []byte("user-1"), Value: []byte("hello")},
		func(err error) { delivered <- err })
	// SendSync returns once the broker acknowledged the message.
	if err := producer.SendSync(ctx, &mq.Message{Topic: topic, Key: []byte("user-1"), Value: []byte("world")}); err != nil {
		log.Fatal(err)
	}
	if err := <-delivered; err != nil {
		log.Fatal(err)
	}
	// Close flushes what is still buffered, then closes.
	if err := producer.Close(); err != nil {
		log.Fatal(err)
	}

	records, err := k.ReadAll(ctx, topic)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sent", len(records))
	// Output: sent 2
}

func ExampleNewConsumer() {
	k, err := mqtest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer k.Close()
	topic := newTopic(k, "example-consumer")
	ctx := context.Background()

	// A message to receive, sent with a trace id in its ctx.
	producer, err := mq.NewProducer(ctx, "im-gateway", k.Options()...)
	if err != nil {
		log.Fatal(err)
	}
	err = producer.SendSync(clog.WithTraceID(ctx, "trace-42"), &mq.Message{Topic: topic, Value: []byte("hello")})
	_ = producer.Close()
	if err != nil {
		log.Fatal(err)
	}

	consumer, err := mq.NewConsumer(ctx, "im-logic", uniqueName("im-logic-group"), k.Options()...)
	if err != nil {
		log.Fatal(err)
	}
	received := make(chan string, 1)
	subscribed := make(chan error, 1)
	go func() { // Subscribe blocks until Close.
		subscribed <- consumer.Subscribe(ctx, []string{topic}, func(ctx context.Context, msg *mq.Message) error {
			// ctx carries the message's trace_id: clog.WithContext(ctx) logs it.
			received <- fmt.Sprintf("%s (trace_id %s)", msg.Value, clog.TraceIDFromContext(ctx))
			return nil
		})
	}()
	select {
	case got := <-received:
		fmt.Println(got)
	case err := <-subscribed:
		log.Fatal(err)
	}
	// Close lets the callback finish, commits its offset and leaves the group.
	if err := consumer.Close(); err != nil {
		log.Fatal(err)
	}
	if err := <-subscribed; err != nil {
		log.Fatal(err)
	}
	// Output: hello (trace_id trace-42)
}

func ExampleModule() {
	k, err := mqtest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer k.Close()
	topic := newTopic(k, "example-module")

	received := make(chan string, 1)
	var producer mq.Producer
	app := fx.New(
		fx.NopLogger,
		mq.Module,
		fx.Supply(mq.ServiceName("im-logic")),
		k.FxOptions(), // the coord.Provider: a service supplies its etcd-backed one
		mq.AsSubscription(uniqueName("im-logic-group"), []string{topic},
			func(ctx context.Context, msg *mq.Message) error {
				received <- string(msg.Value)
				return nil
			}),
		fx.Populate(&producer),
	)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Start starts the subscription's consumer.
	if err := app.Start(ctx); err != nil {
		log.Fatal(err)
	}
	if err := producer.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte("hello from fx")}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("received:", <-received)
	// Stop stops the consumer (finishing in-flight callbacks and committing),
	// then flushes and closes the producer.
	if err := app.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: received: hello from fx
}

// Inbox is a dependency of a handler, provided to the app as usual.
type Inbox struct{ messages chan string }

func NewInbox() *Inbox { return &Inbox{messages: make(chan string, 10)} }

func ExampleAsSubscription() {
	k, err := mqtest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer k.Close()
	topic := newTopic(k, "example-subscription")

	var producer mq.Producer
	var inbox *Inbox
	app := fx.New(fx.NopLogger, mq.Module, fx.Supply(mq.ServiceName("im-logic")), k.FxOptions(),
		fx.Provide(NewInbox),
		// The handler's constructor takes its dependencies from the graph.
		mq.AsSubscription(uniqueName("im-logic-group"), []string{topic}, func(box *Inbox) mq.ConsumeCallback {
			return func(ctx context.Context, msg *mq.Message) error {
				box.messages <- fmt.Sprintf("%s: %s", msg.Key, msg.Value)
				return nil
			}
		}),
		fx.Populate(&producer, &inbox),
	)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Start(ctx); err != nil {
		log.Fatal(err)
	}
	for _, v := range []string{"hi", "bye"} { // same key: same partition, in order
		if err := producer.SendSync(ctx, &mq.Message{Topic: topic, Key: []byte("user-1"), Value: []byte(v)}); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(<-inbox.messages)
	fmt.Println(<-inbox.messages)
	if err := app.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// user-1: hi
	// user-1: bye
}

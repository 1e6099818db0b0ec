// Quickstart: send with Send and SendSync, consume with a consumer group, on an in-process broker and an in-memory config center.
//
//	go run ./examples/quickstart
//
// Nothing to set up: franz-go's kfake cluster plays Kafka on loopback, and
// coord's in-memory config center holds the configuration mq reads, as
// etcd would in a deployed service.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/twmb/franz-go/pkg/kfake"
)

const (
	topic    = "gochat.messages.upstream"
	messages = 1000
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// 1. An in-process Kafka cluster with a 6-partition topic.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, topic))
	if err != nil {
		return err
	}
	defer cluster.Close()

	// 2. The config center, holding the shared Kafka document of the "dev"
	// environment (docs/config.md). In production this lives in etcd.
	provider := coord.NewMemoryProvider()
	defer provider.Close()
	doc := fmt.Sprintf(`{"brokers": [%q], "consumer": {"commit_interval": "100ms", "heartbeat_interval": "200ms"}}`, cluster.ListenAddrs()[0])
	if err := provider.Config().Set(ctx, "dev/global/kafka", doc); err != nil {
		return err
	}
	logger, err := clog.New(ctx, &clog.Config{Level: "warn", Format: "console", Output: "stderr"})
	if err != nil {
		return err
	}
	opts := []mq.Option{mq.WithCoordProvider(provider), mq.WithEnv("dev"), mq.WithLogger(logger)}

	// 3. Produce: half with Send (asynchronous), half with SendSync.
	producer, err := mq.NewProducer(ctx, "im-gateway", opts...)
	if err != nil {
		return err
	}
	traceCtx := clog.WithTraceID(ctx, "trace-quickstart-42")
	var sendErrs atomic.Int64
	var sent sync.WaitGroup
	for i := range messages / 2 {
		sent.Add(1)
		msg := &mq.Message{Topic: topic, Key: []byte("user-" + strconv.Itoa(i%10)), Value: []byte("hello " + strconv.Itoa(i))}
		producer.Send(traceCtx, msg, func(err error) {
			if err != nil {
				sendErrs.Add(1)
			}
			sent.Done()
		})
	}
	for i := messages / 2; i < messages; i++ {
		msg := &mq.Message{Topic: topic, Key: []byte("user-" + strconv.Itoa(i%10)), Value: []byte("hello " + strconv.Itoa(i))}
		if err := producer.SendSync(traceCtx, msg); err != nil {
			return err
		}
	}
	sent.Wait()
	if err := producer.Close(); err != nil {
		return err
	}
	fmt.Printf("produced: %d messages (%d with Send, %d with SendSync), %d send errors, trace_id %q\n",
		messages, messages/2, messages/2, sendErrs.Load(), "trace-quickstart-42")

	// 4. Consume them with a consumer group.
	consumer, err := mq.NewConsumer(ctx, "im-logic", "im-logic-group", opts...)
	if err != nil {
		return err
	}
	var received atomic.Int64
	var traceSeen atomic.Value
	all := make(chan struct{})
	subCtx, stop := context.WithCancel(ctx)
	defer stop()
	subscribed := make(chan error, 1)
	go func() {
		subscribed <- consumer.Subscribe(subCtx, []string{topic}, func(ctx context.Context, msg *mq.Message) error {
			traceSeen.Store(clog.TraceIDFromContext(ctx))
			if received.Add(1) == messages {
				close(all)
			}
			return nil
		})
	}()
	select {
	case <-all:
	case err := <-subscribed:
		return fmt.Errorf("subscribe ended early: %v", err)
	case <-ctx.Done():
		return fmt.Errorf("received %d of %d: %w", received.Load(), messages, ctx.Err())
	}
	if err := consumer.Close(); err != nil {
		return err
	}
	if err := <-subscribed; err != nil {
		return err
	}
	fmt.Printf("consumed: %d messages in group %q, trace_id in the handler's ctx %q\n", received.Load(), "im-logic-group", traceSeen.Load())
	return nil
}

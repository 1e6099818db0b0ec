package mqtest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
)

// A service's test takes the brokers away from its producer only, on the
// in-process broker or a real one, and checks what its code does meanwhile.
func ExampleOutage() {
	k, err := mqtest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer k.Close()
	ctx := context.Background()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	topic := "example-outage-" + hex.EncodeToString(b)
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		log.Fatal(err)
	}

	outage := mqtest.NewOutage()
	producer, err := mq.NewProducer(ctx, "im-gateway", append(k.Options(), outage.Option())...)
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close()

	outage.Cut() // the broker is gone for this producer
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = producer.SendSync(short, &mq.Message{Topic: topic, Value: []byte("first")})
	cancel()
	fmt.Println("while cut:", errors.Is(err, context.DeadlineExceeded))

	outage.Restore() // back: the first message was kept, and goes out too
	err = producer.SendSync(ctx, &mq.Message{Topic: topic, Value: []byte("second")})
	fmt.Println("restored:", err)
	recs, err := k.ReadAll(ctx, topic)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		fmt.Println(string(r.Value))
	}
	// Output:
	// while cut: true
	// restored: <nil>
	// first
	// second
}

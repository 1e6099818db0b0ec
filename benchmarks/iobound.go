package main

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/twmb/franz-go/pkg/kgo"
)

type ioResult struct {
	Partitions    int     `json:"partitions"`
	Msgs          int     `json:"msgs"`
	SleepMs       float64 `json:"sleep_ms"`
	MQMsgsPerSec  float64 `json:"mq_msgs_per_sec"`
	MQSeconds     float64 `json:"mq_seconds"`
	RawMsgsPerSec float64 `json:"serial_msgs_per_sec"`
	RawSeconds    float64 `json:"serial_seconds"`
	Ratio         float64 `json:"ratio"`
}

// runIOBound consumes io-n messages spread evenly over io-partitions with
// a handler that sleeps io-sleep: mq (a worker per partition) against a
// single raw franz-go poll loop calling the handler serially.
func runIOBound(ctx context.Context, f *flags, b *broker) (*ioResult, error) {
	res := &ioResult{Partitions: f.ioParts, Msgs: f.ioN, SleepMs: float64(f.ioSleep) / 1e6}
	topic, err := b.newTopic(ctx, "io", f.ioParts)
	if err != nil {
		return nil, err
	}
	defer b.deleteTopic(ctx, topic)
	if err := b.fill(ctx, topic, newDataset(f.size), f.ioN, true); err != nil {
		return nil, err
	}
	mctx, cancel := context.WithTimeout(ctx, measureTimeout)
	defer cancel()

	// mq
	c, err := mq.NewConsumer(mctx, "bench-io", uniqueName("mqio"), b.mqOptions()...)
	if err != nil {
		return nil, err
	}
	cnt := newCounter(f.ioN)
	sctx, scancel := context.WithCancel(mctx)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Subscribe(sctx, []string{topic}, func(_ context.Context, m *mq.Message) error {
			time.Sleep(f.ioSleep)
			cnt.add(m.Key)
			return nil
		})
	}()
	s, err := cnt.wait(mctx)
	scancel()
	if err := errors.Join(err, <-errc, c.Close()); err != nil {
		return nil, err
	}
	res.MQSeconds, res.MQMsgsPerSec = s.Seconds, float64(f.ioN)/s.Seconds
	log.Printf("  io/mq         %d partitions, %v per message: %7.0f msg/s (%.2fs)", f.ioParts, f.ioSleep, res.MQMsgsPerSec, s.Seconds)

	// one raw poll loop, the handler called serially
	cl, err := kgo.NewClient(b.kgoConsumerOpts(uniqueName("rawio"), topic)...)
	if err != nil {
		return nil, err
	}
	cnt = newCounter(f.ioN)
	lctx, lcancel := context.WithCancel(mctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rawPollLoop(lctx, cl, func(r *kgo.Record) {
			time.Sleep(f.ioSleep)
			cnt.add(r.Key)
		})
	}()
	s, err = cnt.wait(mctx)
	lcancel()
	<-done
	cl.Close()
	if err != nil {
		return nil, err
	}
	res.RawSeconds, res.RawMsgsPerSec = s.Seconds, float64(f.ioN)/s.Seconds
	res.Ratio = res.MQMsgsPerSec / res.RawMsgsPerSec
	log.Printf("  io/serial     %d partitions, %v per message: %7.0f msg/s (%.2fs); mq/serial = %.1fx", f.ioParts, f.ioSleep, res.RawMsgsPerSec, s.Seconds, res.Ratio)
	return res, nil
}

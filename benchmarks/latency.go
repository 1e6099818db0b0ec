package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/twmb/franz-go/pkg/kgo"
)

// latencyWarmUp is the first part of each latency run, whose messages are
// not measured.
const latencyWarmUp = time.Second

// Message kinds in the first byte after the timestamp.
const (
	latProbe    = 0 // sent until the consumer receives one: it has joined
	latWarm     = 1 // warm-up, not measured
	latMeasured = 2
)

type latencyResult struct {
	Client    string  `json:"client"`
	Target    int     `json:"target_msgs_per_sec"`
	Achieved  float64 `json:"achieved_msgs_per_sec"`
	Measured  int     `json:"measured_msgs"`
	Received  int     `json:"received_msgs"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	P999ms    float64 `json:"p999_ms"`
	MaxMs     float64 `json:"max_ms"`
	KeptUp    bool    `json:"kept_up"`
	Diagnosis string  `json:"diagnosis,omitempty"`
	// Rounds holds each round's figures; the fields above are their
	// medians (Measured and Received: sums).
	Rounds []latencyResult `json:"rounds,omitempty"`
}

// latencyPair is a producer and a consumer of one client library.
type latencyPair struct {
	client string
	// consume starts a consumer calling onValue for every message; stop
	// stops it.
	consume func(ctx context.Context, topic string, onValue func([]byte)) (stop func() error, err error)
	// producer returns a send function (async, the value is not reused)
	// and a close function.
	producer func(ctx context.Context) (send func(topic string, key, value []byte), closeFn func() error, err error)
}

func runLatency(ctx context.Context, f *flags, b *broker) ([]latencyResult, error) {
	pairs := []latencyPair{
		{client: clientMQ, consume: mqLatencyConsumer(b), producer: mqLatencyProducer(b)},
		{client: clientRaw, consume: rawLatencyConsumer(b), producer: rawLatencyProducer(b)},
	}
	type key struct {
		client string
		rate   int
	}
	runs := map[key][]latencyResult{}
	for round := 0; round < f.rounds; round++ {
		log.Printf("latency round %d/%d", round+1, f.rounds)
		for i, rate := range f.rates {
			for j := range pairs {
				p := pairs[(round+i+j)%len(pairs)]
				if !f.want("latency/" + p.client) {
					continue
				}
				res, err := measureLatency(ctx, f, b, p, rate)
				if err != nil {
					return nil, fmt.Errorf("%s at %d msg/s: %w", p.client, rate, err)
				}
				log.Printf("  latency/%-10s %6d msg/s (achieved %7.0f): p50 %6.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  max %7.2f ms",
					p.client, rate, res.Achieved, res.P50ms, res.P99ms, res.P999ms, res.MaxMs)
				runs[key{p.client, rate}] = append(runs[key{p.client, rate}], res)
			}
		}
	}
	// One result per client and rate: the median of each figure over the
	// rounds, kept up only if every round did.
	var out []latencyResult
	for _, rate := range f.rates {
		for _, client := range []string{clientMQ, clientRaw} {
			rs := runs[key{client, rate}]
			if len(rs) == 0 {
				continue
			}
			med := func(get func(latencyResult) float64) float64 {
				v := make([]float64, len(rs))
				for i, r := range rs {
					v[i] = get(r)
				}
				return median(v)
			}
			res := latencyResult{Client: client, Target: rate, KeptUp: true, Rounds: rs,
				Achieved: med(func(r latencyResult) float64 { return r.Achieved }),
				P50ms:    med(func(r latencyResult) float64 { return r.P50ms }),
				P99ms:    med(func(r latencyResult) float64 { return r.P99ms }),
				P999ms:   med(func(r latencyResult) float64 { return r.P999ms }),
				MaxMs:    med(func(r latencyResult) float64 { return r.MaxMs }),
			}
			for _, r := range rs {
				res.Measured += r.Measured
				res.Received += r.Received
				if !r.KeptUp {
					res.KeptUp = false
					res.Diagnosis = r.Diagnosis
				}
			}
			out = append(out, res)
		}
	}
	return out, nil
}

func measureLatency(ctx context.Context, f *flags, b *broker, p latencyPair, rate int) (latencyResult, error) {
	res := latencyResult{Client: p.client, Target: rate}
	topic, err := b.newTopic(ctx, "latency", f.partitions)
	if err != nil {
		return res, err
	}
	defer b.deleteTopic(ctx, topic)

	measuredTotal := int(float64(rate) * f.latencyDur.Seconds())
	lat := make([]int64, measuredTotal)
	var idx, probes atomic.Int64
	onValue := func(v []byte) {
		now := time.Now().UnixNano()
		switch v[8] {
		case latProbe:
			probes.Add(1)
		case latMeasured:
			if i := idx.Add(1) - 1; int(i) < len(lat) {
				lat[i] = now - int64(binary.BigEndian.Uint64(v))
			}
		}
	}
	stop, err := p.consume(ctx, topic, onValue)
	if err != nil {
		return res, err
	}
	send, closeProducer, err := p.producer(ctx)
	if err != nil {
		return res, errors.Join(err, stop())
	}
	data := newDataset(f.size)
	msg := func(i int, kind byte) []byte {
		v := make([]byte, max(f.size, 9))
		copy(v[9:], data.value)
		binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
		v[8] = kind
		return v
	}

	// Wait until the consumer has joined and fetches.
	deadline := time.Now().Add(time.Minute)
	for i := 0; probes.Load() == 0; i++ {
		if time.Now().After(deadline) {
			return res, errors.Join(errors.New("consumer received nothing within a minute"), closeProducer(), stop())
		}
		send(topic, data.key(i), msg(i, latProbe))
		time.Sleep(100 * time.Millisecond)
	}

	warmTotal := int(float64(rate) * latencyWarmUp.Seconds())
	total := warmTotal + measuredTotal
	start := time.Now()
	sent := 0
	var measuredStart time.Time
	for sent < total {
		target := min(total, int(time.Since(start).Seconds()*float64(rate))+1)
		for ; sent < target; sent++ {
			kind := byte(latWarm)
			if sent >= warmTotal {
				kind = latMeasured
				if sent == warmTotal {
					measuredStart = time.Now()
				}
			}
			send(topic, data.key(sent), msg(sent, kind))
		}
		time.Sleep(200 * time.Microsecond)
	}
	res.Achieved = float64(measuredTotal) / time.Since(measuredStart).Seconds()
	res.Measured = measuredTotal

	wait := time.Now().Add(30 * time.Second)
	for int(idx.Load()) < measuredTotal && time.Now().Before(wait) {
		time.Sleep(10 * time.Millisecond)
	}
	res.Received = int(min(idx.Load(), int64(measuredTotal)))
	if err := errors.Join(closeProducer(), stop()); err != nil {
		return res, err
	}
	got := slices.Clone(lat[:res.Received])
	slices.Sort(got)
	pct := func(q float64) float64 {
		if len(got) == 0 {
			return 0
		}
		i := min(len(got)-1, int(q*float64(len(got))))
		return float64(got[i]) / 1e6
	}
	res.P50ms, res.P99ms, res.P999ms, res.MaxMs = pct(0.50), pct(0.99), pct(0.999), pct(1)
	res.KeptUp = res.Received == measuredTotal && res.Achieved >= 0.95*float64(rate) && res.P99ms < 1000
	switch {
	case res.Received < measuredTotal:
		res.Diagnosis = fmt.Sprintf("consumer got %d of %d within 30s of the end", res.Received, measuredTotal)
	case res.Achieved < 0.95*float64(rate):
		res.Diagnosis = "producer could not keep the rate"
	case res.P99ms >= 1000:
		res.Diagnosis = "p99 above 1s: the pipeline saturates"
	}
	return res, nil
}

func mqLatencyProducer(b *broker) func(ctx context.Context) (func(string, []byte, []byte), func() error, error) {
	return func(ctx context.Context) (func(string, []byte, []byte), func() error, error) {
		p, err := mq.NewProducer(ctx, "bench-latency", b.mqOptions()...)
		if err != nil {
			return nil, nil, err
		}
		var failed atomic.Int64
		cb := func(err error) {
			if err != nil {
				failed.Add(1)
			}
		}
		send := func(topic string, key, value []byte) {
			p.Send(ctx, &mq.Message{Topic: topic, Key: key, Value: value}, cb)
		}
		return send, func() error {
			err := p.Close()
			if n := failed.Load(); n > 0 {
				err = errors.Join(err, fmt.Errorf("%d sends failed", n))
			}
			return err
		}, nil
	}
}

func rawLatencyProducer(b *broker) func(ctx context.Context) (func(string, []byte, []byte), func() error, error) {
	return func(ctx context.Context) (func(string, []byte, []byte), func() error, error) {
		cl, err := kgo.NewClient(b.kgoProducerOpts()...)
		if err != nil {
			return nil, nil, err
		}
		var failed atomic.Int64
		promise := func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
		}
		send := func(topic string, key, value []byte) {
			cl.Produce(ctx, &kgo.Record{Topic: topic, Key: key, Value: value}, promise)
		}
		return send, func() error {
			err := cl.Flush(ctx)
			cl.Close()
			if n := failed.Load(); n > 0 {
				err = errors.Join(err, fmt.Errorf("%d produces failed", n))
			}
			return err
		}, nil
	}
}

func mqLatencyConsumer(b *broker) func(context.Context, string, func([]byte)) (func() error, error) {
	return func(ctx context.Context, topic string, onValue func([]byte)) (func() error, error) {
		c, err := mq.NewConsumer(ctx, "bench-latency", uniqueName("mqlat"), b.mqOptions()...)
		if err != nil {
			return nil, err
		}
		sctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			errc <- c.Subscribe(sctx, []string{topic}, func(_ context.Context, m *mq.Message) error {
				onValue(m.Value)
				return nil
			})
		}()
		return func() error {
			cancel()
			return errors.Join(<-errc, c.Close())
		}, nil
	}
}

func rawLatencyConsumer(b *broker) func(context.Context, string, func([]byte)) (func() error, error) {
	return func(ctx context.Context, topic string, onValue func([]byte)) (func() error, error) {
		cl, err := kgo.NewClient(b.kgoConsumerOpts(uniqueName("rawlat"), topic)...)
		if err != nil {
			return nil, err
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			rawPollLoop(cctx, cl, func(r *kgo.Record) { onValue(r.Value) })
		}()
		return func() error {
			cancel()
			<-done
			err := cl.CommitMarkedOffsets(ctx)
			cl.Close()
			return err
		}, nil
	}
}

// rawPollLoop is the raw franz-go consumer loop: poll, call the handler
// for each record in order, mark each partition's last record for the
// background commit.
func rawPollLoop(ctx context.Context, cl *kgo.Client, handle func(*kgo.Record)) {
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		if fs.IsClientClosed() {
			return
		}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			for _, r := range p.Records {
				handle(r)
			}
			cl.MarkCommitRecords(p.Records[len(p.Records)-1])
		})
	}
}

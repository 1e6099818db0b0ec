package mq

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// pauseSession is a session with only what pauseBehind uses: a client
// (never dialled: pausing is client state) and the queue bounds.
func pauseSession(t *testing.T) *session {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &session{cl: cl, high: 100, low: 50, base: context.Background(),
		workers: map[topicPartition]*worker{}, resume: map[topicPartition]struct{}{}}
}

// behindWorker is a worker of s that was already behind (high records
// queued) when a 10-record batch arrived.
func behindWorker(t *testing.T, s *session, partition int32) *worker {
	t.Helper()
	w := newWorker(s, topicPartition{"t", partition}, "m")
	t.Cleanup(w.cancel)
	if w.enqueue(make([]*kgo.Record, 100), s.high) || !w.enqueue(make([]*kgo.Record, 10), s.high) {
		t.Fatal("enqueue: want behind on the second batch only")
	}
	return w
}

func TestPauseBehind(t *testing.T) {
	tests := []struct {
		name string
		// catchUp: partition 1's worker takes its first batch (down to
		// 10 queued, below low) while pauseBehind waits.
		catchUp    bool
		cancel     bool // the poll loop is stopping
		wantPaused map[string][]int32
	}{
		{name: "a worker still behind after the grace is paused", wantPaused: map[string][]int32{"t": {0, 1}}},
		{name: "a worker that catches up in the grace is not", catchUp: true, wantPaused: map[string][]int32{"t": {0}}},
		{name: "nothing is paused when stopping", cancel: true, wantPaused: map[string][]int32{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := pauseSession(t)
			slow, fast := behindWorker(t, s, 0), behindWorker(t, s, 1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.pauseBehind(ctx, []*worker{slow, fast})
			}()
			if tt.catchUp {
				// Once pauseBehind waits (its cancel published), the
				// worker takes a batch as its run loop does.
				deadline := time.Now().Add(5 * time.Second)
				for {
					s.mu.Lock()
					waiting := s.pollCancel != nil
					s.mu.Unlock()
					if waiting {
						break
					}
					select {
					case <-done:
						t.Fatal("pauseBehind returned without waiting for the workers")
					default:
					}
					if time.Now().After(deadline) {
						t.Fatal("pauseBehind never waited")
					}
					time.Sleep(100 * time.Microsecond)
				}
				if _, ok := fast.next(); !ok {
					t.Fatal("next: worker stopped")
				}
			}
			<-done
			got := s.cl.PauseFetchPartitions(nil)
			for _, ps := range got {
				slices.Sort(ps)
			}
			if !maps.EqualFunc(got, tt.wantPaused, slices.Equal) {
				t.Errorf("paused %v, want %v", got, tt.wantPaused)
			}
			if tt.catchUp {
				if _, ok := s.resume[fast.tp]; !ok {
					t.Error("the worker that caught up did not ask for its resume")
				}
			}
		})
	}
}

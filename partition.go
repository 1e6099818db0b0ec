package mq

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// slabLen is how many Messages a worker allocates at once: one allocation
// per slabLen records instead of one per record. A callback that keeps a
// *Message keeps its slab alive, as it already keeps the fetch buffer its
// Key and Value point into.
const slabLen = 256

// markEvery is how often a worker marks its progress while working through
// a batch of slow callbacks; a batch is always marked when it ends.
const markEvery = 100 * time.Millisecond

// worker handles the records of one assigned partition, in order, on its
// own goroutine. The session owns it: stop signals it, done is closed when
// it has exited. Its progress is marked for the background commit only
// after the callback returned.
type worker struct {
	s      *session
	tp     topicPartition
	member string          // the group member id the partition was assigned to
	ctx    context.Context // the callbacks' ctx; cancelled on revoke or at the close deadline
	cancel context.CancelFunc

	mu     sync.Mutex
	queue  [][]*kgo.Record
	queued int
	paused bool

	wake     chan struct{} // capacity 1
	quit     chan struct{}
	halted   atomic.Bool // set just before quit is closed: stopped, per record, without a select
	stopOnce sync.Once
	done     chan struct{}
}

func newWorker(s *session, tp topicPartition, member string) *worker {
	ctx, cancel := context.WithCancel(s.base)
	return &worker{
		s:      s,
		tp:     tp,
		member: member,
		ctx:    ctx,
		cancel: cancel,
		wake:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// enqueue adds a batch and reports whether the partition should now be
// paused: its worker is still behind (high records or more queued) when
// more arrive. A queue thus holds at most high + one poll's records.
//
// A resumed partition is fetched again only once the fetch in flight
// returns, which takes FetchMaxWait when the partitions it asks for have no
// new data: pausing as soon as one poll's records reached high (one 1 MiB
// fetch of small records does) stalled a consumer catching up for seconds.
func (w *worker) enqueue(recs []*kgo.Record, high int) bool {
	w.mu.Lock()
	behind := w.queued >= high
	w.queue = append(w.queue, recs)
	w.queued += len(recs)
	pause := !w.paused && behind
	if pause {
		w.paused = true
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return pause
}

func (w *worker) isPaused() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.paused
}

// stop makes the worker exit after its current callback; with cancel, the
// callback's ctx is cancelled too.
func (w *worker) stop(cancel bool) {
	w.stopOnce.Do(func() {
		w.halted.Store(true)
		close(w.quit)
	})
	if cancel {
		w.cancel()
	}
}

func (w *worker) stopped() bool { return w.halted.Load() }

func (w *worker) run() {
	defer close(w.done)
	defer w.cancel()
	for {
		batch, ok := w.next()
		if !ok || !w.process(batch) {
			return
		}
	}
}

// next waits for a batch; false once the worker is stopped.
func (w *worker) next() ([]*kgo.Record, bool) {
	for {
		if w.stopped() {
			return nil, false
		}
		w.mu.Lock()
		if len(w.queue) > 0 {
			b := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			w.queued -= len(b)
			resume := w.paused && w.queued <= w.s.low
			if resume {
				w.paused = false
			}
			w.mu.Unlock()
			if resume {
				w.s.requestResume(w.tp)
			}
			return b, true
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-w.quit:
			return nil, false
		}
	}
}

// process runs the callbacks of a batch in order and marks the last record
// whose callback returned; false when the worker must exit.
func (w *worker) process(batch []*kgo.Record) bool {
	select {
	case w.s.sem <- struct{}{}:
	case <-w.quit:
		return false
	}
	defer func() { <-w.s.sem }()
	var last *kgo.Record
	lastMark := time.Now()
	// The clock is read every stride records: stride doubles (up to 64)
	// while callbacks are fast and drops to 1 when they are slow, so that
	// a fast batch does not pay a clock read per record and a slow one is
	// still marked every markEvery.
	prevCheck, stride, n := lastMark, 1, 0
	ok := true
	var slab []Message
	for i, r := range batch {
		if w.stopped() {
			ok = false
			break
		}
		if len(slab) == 0 {
			slab = make([]Message, min(slabLen, len(batch)-i))
		}
		m := &slab[0]
		slab = slab[1:]
		if err := w.s.handle(w.ctx, r, m); err != nil && w.ctx.Err() != nil {
			// Revoked or given up on while running: not done, so not
			// marked; the partition's next owner redelivers it.
			ok = false
			break
		}
		last = r
		if n++; n < stride {
			continue
		}
		n = 0
		now := time.Now()
		if now.Sub(lastMark) >= markEvery {
			w.s.cl.MarkCommitRecords(r)
			lastMark, last = now, nil
		}
		if now.Sub(prevCheck) < markEvery/100 {
			stride = min(2*stride, 64)
		} else {
			stride = 1
		}
		prevCheck = now
	}
	if last != nil {
		w.s.cl.MarkCommitRecords(last)
	}
	return ok
}

package mq

import (
	"fmt"
	"sync/atomic"

	"github.com/ceyewan/gochat/im-infra/clog"
)

// callbackRunner runs Send callbacks on its own goroutine, in completion
// order, so that a slow or blocking callback never stalls franz-go's promise
// goroutine. Completed records are pushed onto a lock-free stack that the
// runner takes whole. Its length is bounded by the producer's slots: a
// message's slot is released only after its callback returned.
type callbackRunner struct {
	logger  clog.Logger
	release func(n int)
	recycle func(*sendRecord)

	head atomic.Pointer[sendRecord] // last pushed; linked through sendRecord.next
	wake chan struct{}              // capacity 1
	stop chan struct{}              // closed by close
	done chan struct{}              // closed when run returns
}

func newCallbackRunner(logger clog.Logger, release func(n int), recycle func(*sendRecord)) *callbackRunner {
	r := &callbackRunner{
		logger:  logger,
		release: release,
		recycle: recycle,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go r.run()
	return r
}

// push queues a completed record, its err set; it never blocks. The push
// that finds the stack empty wakes the runner: every later push until the
// runner takes the stack finds it non-empty.
func (r *callbackRunner) push(sr *sendRecord) {
	for {
		old := r.head.Load()
		sr.next = old
		if r.head.CompareAndSwap(old, sr) {
			if old == nil {
				select {
				case r.wake <- struct{}{}:
				default:
				}
			}
			return
		}
	}
}

// take empties the stack and returns its records oldest first.
func (r *callbackRunner) take() *sendRecord {
	var first *sendRecord
	for sr := r.head.Swap(nil); sr != nil; {
		next := sr.next
		sr.next = first
		first, sr = sr, next
	}
	return first
}

func (r *callbackRunner) run() {
	defer close(r.done)
	for {
		select {
		case <-r.wake:
			r.runAll(r.take())
		case <-r.stop:
			// Every record was pushed before close was called.
			r.runAll(r.take())
			return
		}
	}
}

func (r *callbackRunner) runAll(sr *sendRecord) {
	n := 0
	for sr != nil {
		next := sr.next
		r.call(sr)
		r.recycle(sr)
		sr = next
		n++
	}
	// One release per batch: a sender waiting for room wakes once per
	// batch, not once per message.
	if n > 0 {
		r.release(n)
	}
}

// call runs one callback, recovering a panic so that one bad callback does
// not take the producer down.
func (r *callbackRunner) call(sr *sendRecord) {
	defer func() {
		if p := recover(); p != nil {
			r.logger.Error("mq: send callback panicked", clog.String("topic", sr.rec.Topic), clog.String("panic", fmt.Sprint(p)))
		}
	}()
	if sr.cb == nil {
		if sr.err != nil {
			r.logger.Error("mq: send failed", clog.String("topic", sr.rec.Topic), clog.Err(sr.err))
		}
		return
	}
	sr.cb(sr.err)
}

// close runs what is queued and stops the goroutine; nothing may be pushed
// after close.
func (r *callbackRunner) close() {
	close(r.stop)
	<-r.done
}

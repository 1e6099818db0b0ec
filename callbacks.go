package mq

import (
	"fmt"
	"sync"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// callbackRunner runs Send callbacks on its own goroutine, in completion
// order, so that a slow or blocking callback never stalls franz-go's promise
// goroutine. Its queue is bounded by the producer's slots: a message's slot
// is released only after its callback returned.
type callbackRunner struct {
	logger  clog.Logger
	release func(n int)

	mu    sync.Mutex
	queue []completion
	wake  chan struct{} // capacity 1
	stop  chan struct{} // closed by close
	done  chan struct{} // closed when run returns
}

func newCallbackRunner(logger clog.Logger, release func(n int)) *callbackRunner {
	r := &callbackRunner{
		logger:  logger,
		release: release,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go r.run()
	return r
}

// completion is a finished Send, its callback and franz-go's verdict.
type completion struct {
	rec *kgo.Record
	cb  func(error)
	err error
}

// push queues a finished Send; it never blocks.
func (r *callbackRunner) push(rec *kgo.Record, cb func(error), err error) {
	r.mu.Lock()
	r.queue = append(r.queue, completion{rec, cb, err})
	first := len(r.queue) == 1
	r.mu.Unlock()
	if first {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

func (r *callbackRunner) run() {
	defer close(r.done)
	var batch []completion
	for {
		select {
		case <-r.wake:
		case <-r.stop:
			// Every completion was pushed before close was called.
			r.mu.Lock()
			batch, r.queue = r.queue, nil
			r.mu.Unlock()
			r.runAll(batch)
			return
		}
		r.mu.Lock()
		batch, r.queue = r.queue, batch[:0]
		r.mu.Unlock()
		r.runAll(batch)
		clear(batch)
	}
}

func (r *callbackRunner) runAll(batch []completion) {
	for i := 0; i < len(batch); {
		i = r.runFrom(batch, i)
	}
	// One release per batch: a sender waiting for room wakes once per
	// batch, not once per message.
	if len(batch) > 0 {
		r.release(len(batch))
	}
}

// runFrom runs the callbacks of batch from i on and returns the index after
// the last one run. A callback that panics is logged and ends the call, so
// that one recover frame serves the whole batch, not one per callback: the
// caller goes on after it.
func (r *callbackRunner) runFrom(batch []completion, i int) (next int) {
	next = i
	defer func() {
		if p := recover(); p != nil {
			r.logger.Error("mq: send callback panicked", clog.String("topic", batch[next].rec.Topic), clog.String("panic", fmt.Sprint(p)))
			next++
		}
	}()
	for ; next < len(batch); next++ {
		c := &batch[next]
		err := produceErr(c.rec.Topic, c.err)
		if c.cb == nil {
			if err != nil {
				r.logger.Error("mq: send failed", clog.String("topic", c.rec.Topic), clog.Err(err))
			}
			continue
		}
		c.cb(err)
	}
	return next
}

// close runs what is queued and stops the goroutine; nothing may be pushed
// after close.
func (r *callbackRunner) close() {
	close(r.stop)
	<-r.done
}

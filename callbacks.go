package mq

import (
	"fmt"
	"sync"

	"github.com/ceyewan/gochat/im-infra/clog"
)

// completion is one finished Send waiting for its callback.
type completion struct {
	cb    func(error)
	topic string
	err   error
}

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

// push queues a completion; it never blocks.
func (r *callbackRunner) push(c completion) {
	r.mu.Lock()
	r.queue = append(r.queue, c)
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
	for _, c := range batch {
		r.call(c)
	}
	// One release per batch: a sender waiting for room wakes once per
	// batch, not once per message.
	if len(batch) > 0 {
		r.release(len(batch))
	}
}

// call runs one callback, recovering a panic so that one bad callback does
// not take the producer down.
func (r *callbackRunner) call(c completion) {
	defer func() {
		if p := recover(); p != nil {
			r.logger.Error("mq: send callback panicked", clog.String("topic", c.topic), clog.String("panic", fmt.Sprint(p)))
		}
	}()
	if c.cb == nil {
		if c.err != nil {
			r.logger.Error("mq: send failed", clog.String("topic", c.topic), clog.Err(c.err))
		}
		return
	}
	c.cb(c.err)
}

// close runs what is queued and stops the goroutine; nothing may be pushed
// after close.
func (r *callbackRunner) close() {
	close(r.stop)
	<-r.done
}

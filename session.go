package mq

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// neverAutoCommit turns franz-go's own commit loop off (AutoCommitMarks
// cannot be combined with DisableAutoCommit): commitLoop commits instead.
const neverAutoCommit = 100 * 365 * 24 * time.Hour

// fetchMaxWait is how long a broker may hold a fetch that finds no data:
// Java's and librdkafka's default, not franz-go's 5s, because a resumed
// partition waits for the fetch in flight (see worker.enqueue).
const fetchMaxWait = 500 * time.Millisecond

// commitTimeout bounds the blocking commit made when partitions are revoked.
const commitTimeout = 10 * time.Second

// closeGrace is how long shutdown still waits for callbacks after it
// cancelled their ctx, when its ctx has no deadline.
const closeGrace = time.Second

type topicPartition struct {
	topic     string
	partition int32
}

func (tp topicPartition) String() string { return fmt.Sprintf("%s/%d", tp.topic, tp.partition) }

// session is one Subscribe call: the group client, its poll loop (run by
// Subscribe's goroutine) and a worker goroutine per assigned partition.
//
// franz-go runs with BlockRebalanceOnPoll: between a poll and AllowRebalance
// no partition can be assigned or revoked, so every polled record reaches
// the worker of the assignment it was fetched for. Workers never block the
// poll loop for long: a partition whose queue reaches
// consumer.partition_buffer records, and stays there for pauseGrace, is
// paused, and resumed once its worker has drained half of it.
type session struct {
	c       *consumer
	cl      *kgo.Client
	topics  []string
	cb      ConsumeCallback
	base    context.Context // Subscribe's ctx values, never cancelled
	logger  clog.Logger
	sem     chan struct{} // consumer.concurrency: batches being handled at once
	maxPoll int
	high    int // queue length that pauses a partition
	low     int // queue length that resumes it

	mu         sync.Mutex
	workers    map[topicPartition]*worker
	resume     map[topicPartition]struct{}
	pollCancel context.CancelFunc // wakes the poll loop; nil outside PollRecords
	// loopCommitCancel cancels the background commit in flight; nil when
	// there is none.
	loopCommitCancel context.CancelFunc

	// commitMu makes each commit's snapshot of marks and ownership and the
	// commit itself one step: a revoke's commit is never followed by a
	// background commit of marks taken before it, which would move the
	// partition's committed offset back after its next owner started.
	commitMu sync.Mutex
}

func newSession(c *consumer, topics []string, cb ConsumeCallback, base context.Context) *session {
	cc := c.cfg.Consumer
	return &session{
		c:       c,
		topics:  topics,
		cb:      cb,
		base:    base,
		logger:  c.logger,
		sem:     make(chan struct{}, cc.Concurrency),
		maxPoll: cc.MaxPollRecords,
		high:    cc.PartitionBuffer,
		low:     cc.PartitionBuffer / 2,
		workers: map[topicPartition]*worker{},
		resume:  map[topicPartition]struct{}{},
	}
}

func (s *session) groupOpts() []kgo.Opt {
	cc := s.c.cfg.Consumer
	start := kgo.NewOffset().AtStart()
	if cc.OffsetReset == "latest" {
		start = kgo.NewOffset().AtEnd()
	}
	return []kgo.Opt{
		kgo.ConsumerGroup(s.c.groupID),
		kgo.ConsumeTopics(s.topics...),
		kgo.ConsumeStartOffset(start),
		kgo.ConsumeResetOffset(start),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(neverAutoCommit),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
		kgo.SessionTimeout(cc.SessionTimeout.D()),
		kgo.RebalanceTimeout(cc.RebalanceTimeout.D()),
		kgo.HeartbeatInterval(cc.HeartbeatInterval.D()),
		kgo.FetchMaxBytes(int32(cc.FetchMaxBytes)),
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.DisableClientMetrics(), // Close would wait up to 1s past its deadline for a last push
	}
}

// poll runs the poll loop until ctx ends, stop is closed, or a fatal error.
func (s *session) poll(ctx context.Context, stop <-chan struct{}) error {
	runCtx, cancel := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		s.commitLoop(runCtx)
	}()
	defer func() {
		cancel()
		<-loopDone
	}()
	go func() { // ends with poll: cancel is deferred above
		select {
		case <-stop:
			cancel()
		case <-runCtx.Done():
		}
	}()
	for {
		pctx, pcancel := context.WithCancel(runCtx)
		s.mu.Lock()
		s.pollCancel = pcancel
		resume := s.takeResumes()
		s.mu.Unlock()
		if len(resume) > 0 {
			s.cl.ResumeFetchPartitions(resume)
		}
		fetches := s.cl.PollRecords(pctx, s.maxPoll)
		s.mu.Lock()
		s.pollCancel = nil
		s.mu.Unlock()
		woken := pctx.Err() != nil
		pcancel()
		if runCtx.Err() != nil {
			s.cl.AllowRebalance()
			return nil
		}
		var fatal error
		fetches.EachError(func(topic string, partition int32, err error) {
			switch {
			case woken && errors.Is(err, context.Canceled):
			case errors.Is(err, kgo.ErrClientClosed):
				fatal = fmt.Errorf("mq: consume: %w", ErrClosed)
			case fatalGroupErr(err):
				fatal = fmt.Errorf("mq: consume group %s, topics %s: %w", s.c.groupID, strings.Join(s.topics, ","), err)
			default:
				s.logger.Warn("mq: fetch error, retrying", clog.String("topic", topic), clog.Int32("partition", partition), clog.Err(err))
			}
		})
		if fatal != nil {
			s.cl.AllowRebalance()
			s.logger.Error("mq: consuming stopped", clog.Err(fatal))
			return fatal
		}
		s.pauseBehind(runCtx, s.dispatch(fetches))
		s.cl.AllowRebalance()
	}
}

// takeResumes returns the partitions to resume; s.mu is held.
func (s *session) takeResumes() map[string][]int32 {
	if len(s.resume) == 0 {
		return nil
	}
	out := map[string][]int32{}
	for tp := range s.resume {
		out[tp.topic] = append(out[tp.topic], tp.partition)
	}
	clear(s.resume)
	return out
}

// requestResume asks the poll loop to resume a drained partition.
func (s *session) requestResume(tp topicPartition) {
	s.mu.Lock()
	s.resume[tp] = struct{}{}
	if s.pollCancel != nil {
		s.pollCancel()
	}
	s.mu.Unlock()
}

// dispatch hands each partition's records to its worker and returns the
// workers that were already behind when these arrived (see enqueue).
func (s *session) dispatch(fetches kgo.Fetches) []*worker {
	var behind []*worker
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		tp := topicPartition{p.Topic, p.Partition}
		s.mu.Lock()
		w := s.workers[tp]
		s.mu.Unlock()
		if w == nil {
			// Cannot happen with BlockRebalanceOnPoll; not processed, not marked.
			s.logger.Warn("mq: records of a partition this member does not own, left for its owner", clog.String("partition", tp.String()))
			return
		}
		if w.enqueue(p.Records, s.high) {
			behind = append(behind, w)
		}
	})
	return behind
}

// pauseGrace is how long the poll loop gives workers that fell behind to
// catch up before it pauses their partitions. Pausing is not free: franz-go
// drops the records it has already fetched for a paused partition and
// fetches them again after the resume. With fast callbacks a worker is
// behind only briefly, when a fetch lands on a queue still draining
// (about 1 ms on Kafka in the benchmarks), and waiting for it avoids the
// second fetch; a slow worker is paused after the grace, as before.
const pauseGrace = 10 * time.Millisecond

// pauseBehind pauses the partitions of the workers in behind that have not
// caught up (down to low queued records) within pauseGrace. It runs before
// AllowRebalance, so that no revoke can stop a worker between the wait and
// the pause (stopWorkers resumes what it finds paused).
func (s *session) pauseBehind(ctx context.Context, behind []*worker) {
	if len(behind) == 0 {
		return
	}
	deadline := time.Now().Add(pauseGrace)
	for {
		// A worker that caught up cleared paused and asked for its
		// resume, which cancels the wait.
		behind = slices.DeleteFunc(behind, func(w *worker) bool { return !w.isPaused() })
		if len(behind) == 0 || !time.Now().Before(deadline) {
			break
		}
		wctx, cancel := context.WithDeadline(ctx, deadline)
		s.mu.Lock()
		s.pollCancel = cancel
		s.mu.Unlock()
		// One that caught up before cancel was published could not
		// cancel it.
		if slices.ContainsFunc(behind, func(w *worker) bool { return !w.isPaused() }) {
			cancel()
		}
		<-wctx.Done()
		s.mu.Lock()
		s.pollCancel = nil
		s.mu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return // stopping: the workers are stopped next
		}
	}
	if len(behind) == 0 {
		return
	}
	pause := map[string][]int32{}
	for _, w := range behind {
		pause[w.tp.topic] = append(pause[w.tp.topic], w.tp.partition)
	}
	s.cl.PauseFetchPartitions(pause)
}

// assigned starts a worker per new partition (franz-go's group goroutine).
func (s *session) assigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	member, _ := cl.GroupMetadata()
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, partitions := range assigned {
		for _, p := range partitions {
			tp := topicPartition{topic, p}
			if s.workers[tp] != nil {
				continue
			}
			w := newWorker(s, tp, member)
			s.workers[tp] = w
			go w.run()
		}
	}
	if len(assigned) > 0 {
		s.logger.Info("mq: partitions assigned", clog.String("partitions", formatPartitions(assigned)))
	}
}

// revoked stops the workers of revoked partitions, cancelling their
// callbacks' ctx, and commits what they processed while still the owner.
func (s *session) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	ws := s.takeWorkers(revoked)
	s.stopWorkers(ws, true)
	cctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	s.cancelLoopCommit()
	s.commitMu.Lock()
	err := s.commitOwned(cctx, cl, ws)
	s.commitMu.Unlock()
	if err != nil {
		s.logger.Warn("mq: commit on revoke failed; the next owner re-reads from the last commit", clog.Err(err))
	}
	if len(revoked) > 0 {
		s.logger.Info("mq: partitions revoked", clog.String("partitions", formatPartitions(revoked)))
	}
}

// lost stops the workers of lost partitions; nothing is committed: this
// member no longer owns them.
func (s *session) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.stopWorkers(s.takeWorkers(lost), true)
	if len(lost) > 0 {
		s.logger.Warn("mq: partitions lost; their uncommitted messages will be redelivered", clog.String("partitions", formatPartitions(lost)))
	}
}

// takeWorkers removes the workers of parts (all when parts is nil).
func (s *session) takeWorkers(parts map[string][]int32) []*worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ws []*worker
	if parts == nil {
		for tp, w := range s.workers {
			ws = append(ws, w)
			delete(s.workers, tp)
		}
		return ws
	}
	for topic, partitions := range parts {
		for _, p := range partitions {
			tp := topicPartition{topic, p}
			if w := s.workers[tp]; w != nil {
				ws = append(ws, w)
				delete(s.workers, tp)
			}
		}
	}
	return ws
}

// stopWorkers stops ws and waits for them, then resumes the partitions
// they had paused so that a later assignment fetches them again.
func (s *session) stopWorkers(ws []*worker, cancel bool) {
	for _, w := range ws {
		w.stop(cancel)
	}
	var resume map[string][]int32
	for _, w := range ws {
		<-w.done
		if w.isPaused() {
			if resume == nil {
				resume = map[string][]int32{}
			}
			resume[w.tp.topic] = append(resume[w.tp.topic], w.tp.partition)
		}
	}
	if resume != nil {
		s.cl.ResumeFetchPartitions(resume)
	}
}

// commitLoop commits in the background, every consumer.commit_interval,
// until ctx ends.
func (s *session) commitLoop(ctx context.Context) {
	t := time.NewTicker(s.c.cfg.Consumer.CommitInterval.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.loopCommit(ctx)
	}
}

// loopCommit is one background commit, which a revoke cancels (see
// cancelLoopCommit).
func (s *session) loopCommit(ctx context.Context) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.loopCommitCancel = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.loopCommitCancel = nil
		s.mu.Unlock()
	}()
	s.commitMu.Lock()
	err := s.commitOwned(cctx, s.cl, nil)
	s.commitMu.Unlock()
	if err != nil && cctx.Err() == nil {
		s.logger.Warn("mq: background commit failed; retried at the next interval", clog.Err(err))
	}
}

// cancelLoopCommit cancels the background commit in flight, so that a
// revoke does not wait behind it (it may wait for a rebalance that waits
// for the revoke). A cancelled commit that already reached the broker is
// still ahead of the revoke's on the coordinator connection.
func (s *session) cancelLoopCommit() {
	s.mu.Lock()
	if s.loopCommitCancel != nil {
		s.loopCommitCancel()
	}
	s.mu.Unlock()
}

// commitOwned commits the marked offsets of the partitions this member
// owns as the group member it is now: those of its workers, and of the
// workers in stopped, assigned under the member id the client has now.
//
// A member the group expelled (its session timed out while a callback
// ran, say) rejoins under a new member id, and franz-go keeps the marks of
// its old assignment across the rejoin: committing them would commit, with
// a valid generation, partitions another member owns by now.
func (s *session) commitOwned(ctx context.Context, cl *kgo.Client, stopped []*worker) error {
	member, _ := cl.GroupMetadata()
	owned := map[topicPartition]bool{}
	s.mu.Lock()
	for tp, w := range s.workers {
		owned[tp] = w.member == member
	}
	s.mu.Unlock()
	for _, w := range stopped {
		owned[w.tp] = w.member == member
	}
	var stale []string
	commit := map[string]map[int32]kgo.EpochOffset{}
	for topic, partitions := range cl.MarkedOffsets() {
		for p, off := range partitions {
			tp := topicPartition{topic, p}
			mine, known := owned[tp]
			if !known {
				continue // revoked meanwhile: its revoke commits it
			}
			if !mine {
				stale = append(stale, tp.String())
				continue
			}
			if commit[topic] == nil {
				commit[topic] = map[int32]kgo.EpochOffset{}
			}
			commit[topic][p] = off
		}
	}
	if len(stale) > 0 {
		sort.Strings(stale)
		s.logger.Warn("mq: not committing partitions of an earlier membership; the group expelled this member, their messages will be redelivered",
			clog.String("partitions", strings.Join(stale, ", ")))
	}
	if len(commit) == 0 {
		return nil
	}
	var rerr error
	cl.CommitOffsetsSync(ctx, commit, func(_ *kgo.Client, req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			rerr = err
			return
		}
		if req.MemberID != member {
			s.logger.Error("mq: offsets committed under another membership than they were checked for",
				clog.String("checked", member), clog.String("committed", req.MemberID))
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil && rerr == nil {
					rerr = perr
				}
			}
		}
	})
	return rerr
}

// shutdown stops every worker (in-flight callbacks finish; their ctx is
// cancelled when time runs short), commits what was processed, and leaves
// the group, returning by ctx's deadline. The poll loop has returned.
//
// Of the time ctx leaves, callbacks get all but a reserve (a third, at most
// two seconds); then their ctx is cancelled and they get half the reserve
// to return; the commit and the leave get the rest.
func (s *session) shutdown(ctx context.Context) error {
	start := time.Now()
	soft, grace := ctx, closeGrace
	if d, ok := ctx.Deadline(); ok {
		reserve := min(2*time.Second, time.Until(d)/3)
		var cancel context.CancelFunc
		soft, cancel = context.WithDeadline(ctx, d.Add(-reserve))
		defer cancel()
		grace = reserve / 2
	}
	ws := s.takeWorkers(nil)
	for _, w := range ws {
		w.stop(false)
	}
	var errs []error
	var stuck []string
	for _, w := range ws {
		if waitOrDeadline(soft, w.done) {
			continue
		}
		w.stop(true)
		t := time.NewTimer(grace)
		select {
		case <-w.done:
		case <-t.C:
			stuck = append(stuck, w.tp.String())
		}
		t.Stop()
	}
	if len(stuck) > 0 {
		sort.Strings(stuck)
		errs = append(errs, fmt.Errorf("mq: close consumer %s: callbacks still running on %s at the deadline; their messages stay uncommitted and will be redelivered: %w",
			s.c.groupID, strings.Join(stuck, ", "), context.DeadlineExceeded))
	}
	s.commitMu.Lock()
	err := s.commitOwned(ctx, s.cl, ws)
	s.commitMu.Unlock()
	if err != nil {
		errs = append(errs, fmt.Errorf("mq: close consumer %s: commit: %w", s.c.groupID, err))
	}
	if err := s.cl.LeaveGroupContext(ctx); err != nil && ctx.Err() == nil {
		errs = append(errs, fmt.Errorf("mq: close consumer %s: leave group: %w", s.c.groupID, err))
	}
	s.cl.Close()
	s.logger.Info("mq: consumer closed", sinceStart(start))
	return errors.Join(errs...)
}

// handle runs the callback for one record, given as m: the ctx carries the
// trace_id, a panic is recovered, and an error is logged.
func (s *session) handle(ctx context.Context, r *kgo.Record, m *Message) (err error) {
	traceID := traceIDOf(r)
	if traceID != "" {
		ctx = clog.WithTraceID(ctx, traceID)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("mq: callback panicked: %v", p)
			s.logger.Error("mq: callback panicked", append(recordFields(r, traceID),
				clog.String("panic", fmt.Sprint(p)), clog.String("stack", string(debug.Stack())))...)
			return
		}
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			s.logger.Warn("mq: callback failed after its partition was revoked; the message will be redelivered",
				append(recordFields(r, traceID), clog.Err(err))...)
			return
		}
		s.logger.Error("mq: callback failed", append(recordFields(r, traceID), clog.Err(err))...)
	}()
	fillMessage(m, r)
	return s.cb(ctx, m)
}

func recordFields(r *kgo.Record, traceID string) []clog.Field {
	return []clog.Field{
		clog.String("topic", r.Topic),
		clog.Int32("partition", r.Partition),
		clog.Int64("offset", r.Offset),
		clog.String("trace_id", traceID),
	}
}

func formatPartitions(m map[string][]int32) string {
	var parts []string
	for topic, ps := range m {
		sorted := append([]int32(nil), ps...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		parts = append(parts, fmt.Sprintf("%s%v", topic, sorted))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
)

// Scenario 2: members of one group join and leave (Close, or the end of
// Subscribe's ctx) again and again, between one and four at a time, while
// keyed messages flow.
//
//   - Lost = 0.
//   - Order: a run is one member's worker for one partition, from its
//     assignment to its revocation (the worker's callback ctx identifies
//     it). Within a run, the messages of each key arrive in send order and
//     without a gap: a run reads a contiguous range of its partition.
//   - Commits, read from the broker every 20ms during the storm (kadm),
//     never go backwards, and never cover a record whose callback had not
//     returned by the time the offsets were read: a commit by a member
//     that had lost the partition would show as one or the other.
//   - On kfake, every commit request is also checked against the
//     assignment of its generation (commitAudit): no member commits a
//     partition another member owns.
func TestRebalanceStorm(t *testing.T) {
	k := mqtest.New(t)
	n := pick(10000, 100000, 1000000)
	flow := time.Duration(pick(10, 40, 600)) * time.Second
	const partitions, keys = 12, 240
	seed := seedFromEnv(t)
	rng := rand.New(rand.NewPCG(uint64(seed), 2))
	topic := k.NewTopic(t, partitions)
	group := mqtest.UniqueName(t)
	start := time.Now()

	l := newTally()
	var counter atomic.Int64 // processings so far
	var mu sync.Mutex
	first := map[string]int64{} // id -> counter at its first processing
	type run struct {
		member string
		ids    []int
	}
	runs := map[<-chan struct{}]*run{}
	var runOrder []*run
	handler := func(name string) mq.ConsumeCallback {
		return func(ctx context.Context, msg *mq.Message) error {
			v := string(msg.Value)
			if idNum(v)%50 == 0 {
				time.Sleep(time.Millisecond) // a little work
			}
			mu.Lock()
			r := runs[ctx.Done()]
			if r == nil {
				r = &run{member: name}
				runs[ctx.Done()] = r
				runOrder = append(runOrder, r)
			}
			r.ids = append(r.ids, idNum(v))
			c := counter.Add(1)
			if _, ok := first[v]; !ok {
				first[v] = c
			}
			mu.Unlock()
			l.process(v)
			return nil
		}
	}

	watch := watchCommits(k, group, topic, 20*time.Millisecond, &counter)
	var audit *commitAudit
	if !k.Real() {
		audit = auditCommits(k, group) // every commit, against its generation's assignment
	}
	p := newProducer(t, k, "storm-feeder")
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		// Paced, so that the messages flow for the whole storm.
		stream(ctxForFlow(t, flow), p, topic, 0, n, keys, flow/time.Duration(n), l)
	}()

	var members []*member
	joins, leaves, cancels := 0, 0, 0
	var problems []string
	leave := func(i int) {
		m := members[i]
		members = append(members[:i], members[i+1:]...)
		leaves++
		var cerr, serr error
		if rng.IntN(4) == 0 { // the end of Subscribe's ctx stops it as Close does
			cancels++
			m.stop()
			select {
			case serr = <-m.done:
				m.done <- serr
			case <-time.After(waitLong):
				serr = fmt.Errorf("Subscribe did not return after its ctx ended")
			}
			cerr = m.c.Close()
		} else {
			cerr, serr = m.leave()
		}
		if cerr != nil || serr != nil {
			problems = append(problems, fmt.Sprintf("%s left: Close = %v, Subscribe = %v", m.name, cerr, serr))
		}
	}
	done := func() bool {
		select {
		case <-produced:
			return l.allProcessed()
		default:
			return false
		}
	}
	deadline := time.Now().Add(flow + waitLong)
	for !done() {
		if time.Now().After(deadline) {
			break
		}
		switch alive := len(members); {
		case alive < 1 || alive < 3 && rng.IntN(3) > 0:
			joins++
			name := fmt.Sprintf("m%03d", joins)
			members = append(members, join(t, k, "storm", group, topic, name, handler(name)))
		case alive >= 4 || rng.IntN(2) == 0:
			leave(rng.IntN(alive))
		default:
			joins++
			name := fmt.Sprintf("m%03d", joins)
			members = append(members, join(t, k, "storm", group, topic, name, handler(name)))
		}
		time.Sleep(time.Duration(100+rng.IntN(600)) * time.Millisecond) // pace the churn
	}
	// Settle: one member finishes what is left, then everyone leaves.
	if len(members) == 0 {
		joins++
		members = append(members, join(t, k, "storm", group, topic, "last", handler("last")))
	}
	<-produced
	waitProcessed(t, l)
	for len(members) > 0 {
		leave(0)
	}
	watch.close()

	lay := readLayout(t, k, topic)
	end, err := committed(ctxFor(t), k, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p, e := range lay.ends {
		if end[p] != e {
			problems = append(problems, fmt.Sprintf("partition %d: committed %d at the end, want %d", p, end[p], e))
		}
	}

	// Order within each run.
	mu.Lock()
	orderErrs := checkRunOrder(func(yield func(member string, ids []int) bool) {
		for _, r := range runOrder {
			if !yield(r.member, r.ids) {
				return
			}
		}
	}, l, keys)
	nruns := len(runOrder)
	firstCopy := first
	mu.Unlock()
	problems = append(problems, orderErrs...)

	watch.mu.Lock()
	problems = append(problems, watch.backwards...)
	problems = append(problems, checkCommittedProcessed(watch.snaps, lay, firstCopy)...)
	snaps := len(watch.snaps)
	watch.mu.Unlock()

	audited := -1
	if audit != nil {
		var bad []string
		audited, bad = audit.check()
		problems = append(problems, bad...)
	}
	sent, acked, failed, processed, lost, dup := l.figures()
	report(t, "storm", "commits_audited", audited, "broker", brokerKind(k), "joins", joins, "leaves", leaves, "ctx_leaves", cancels, "worker_runs", nruns,
		"sent", sent, "acked", acked, "failed", failed, "processed", processed, "lost", lost, "dup", dup,
		"commit_snapshots", snaps, "seed", seed, "took", time.Since(start))
	if len(problems) > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(firstN(problems, 20), "\n"))
	}
	if lost != 0 {
		t.Errorf("%d acknowledged messages never processed, e.g. %v", lost, l.lostIDs(10))
	}
	if failed != 0 {
		t.Errorf("%d sends failed", failed)
	}
	if joins < 6 {
		t.Errorf("only %d joins: the storm was too short to mean much", joins)
	}
}

// checkRunOrder checks that, within each run, each key's messages come in
// send order with none of its acknowledged messages skipped.
func checkRunOrder(runs func(func(member string, ids []int) bool), l *tally, keys int) []string {
	// pos[i] is i's rank among the acknowledged messages of its key.
	l.mu.Lock()
	acked := make([]int, 0, len(l.acked))
	for v := range l.acked {
		acked = append(acked, idNum(v))
	}
	l.mu.Unlock()
	sort.Ints(acked)
	pos := make(map[int]int, len(acked))
	next := make([]int, keys)
	for _, i := range acked {
		pos[i] = next[i%keys]
		next[i%keys]++
	}
	var bad []string
	runs(func(member string, ids []int) bool {
		last := map[int]int{} // key -> rank of the last message
		for _, i := range ids {
			key := i % keys
			r, ok := pos[i]
			if !ok {
				continue // not acknowledged (its send failed): order unknown
			}
			if prev, seen := last[key]; seen && r != prev+1 {
				bad = append(bad, fmt.Sprintf("member %s: key %d: message %d (rank %d) after rank %d in one run", member, key, i, r, prev))
				if len(bad) > 50 {
					return false
				}
			}
			last[key] = r
		}
		return true
	})
	return bad
}

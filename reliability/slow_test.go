package reliability

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Scenario 6: a callback is still running when its partition is taken
// away from its member.
//
// Two partitions, five messages each; the third of each is slow. Member A
// works through both and hangs in both slow callbacks; member B joins.
//
//   - "honours ctx": one partition (X) moves to B; A's callback on X sees its
//     ctx cancelled and returns ctx.Err(). A commits what it finished
//     (offset 2) and not the slow message: while B hangs in its own callback
//     of that message, the committed offset of X, read with kadm, stays 2.
//     Duplicates = 0.
//   - "ignores ctx": A's callback on X carries on after its cancellation and
//     returns nil later. The revocation waits for it: A still owns X, so B
//     must not get X's slow message while A is in it, and A's commit of it
//     is an owner's commit (B then starts after it). Duplicates = 0.
//   - "lost" (kfake only): A's heartbeats never reach the group (A is told
//     they did), so the group expels A while its callbacks hang, and B takes
//     both partitions. Then A's callbacks return nil and A goes on through
//     the rest of its fetched batch: a zombie, it cannot know yet. Its
//     commits must not land: while B hangs in the slow messages, the
//     committed offsets stay below them. Duplicates: all five messages of
//     each partition at most (A had not committed the two before the slow
//     one: a worker marks its progress when a batch ends or every 100ms, and
//     this batch hung within 100ms of its start).
//
// Lost = 0 always.
func TestSlowHandlerVersusRebalance(t *testing.T) {
	for _, variant := range []string{"honours_ctx", "ignores_ctx", "lost"} {
		t.Run(variant, func(t *testing.T) { testSlowHandler(t, variant) })
	}
}

const slowIdx = 2

func testSlowHandler(t *testing.T, variant string) {
	k := mqtest.New(t)
	if variant == "lost" {
		if k.Real() {
			t.Skip("dropping one member's heartbeats needs the in-process broker")
		}
		if !lowerMinSessionTimeout(t, k) {
			t.Skip("kfake refused a short session timeout")
		}
	}
	topic := k.NewTopic(t, 2)
	group := mqtest.UniqueName(t)
	start := time.Now()
	cfg := map[string]any{"commit_interval": "100ms", "rebalance_timeout": "3s", "heartbeat_interval": "200ms"}
	if variant == "lost" {
		cfg["session_timeout"] = "1s"
		cfg["heartbeat_interval"] = "100ms"
	}
	if err := k.SetServiceConfig("slow", map[string]any{"consumer": cfg}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	l := newTally()
	p := newProducer(t, k, "slow-feeder")
	keys := [2]string{keyForPartition(0, 2), keyForPartition(1, 2)}
	for part := range 2 {
		for i := range 5 {
			v := id(part*100 + i)
			l.send()
			err := p.SendSync(ctx, &mq.Message{Topic: topic, Key: []byte(keys[part]), Value: []byte(v)})
			l.result(v, err)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	partOf := func(msg *mq.Message) int {
		if string(msg.Key) == keys[1] {
			return 1
		}
		return 0
	}
	idxOf := func(msg *mq.Message) int { return idNum(string(msg.Value)) % 100 }

	releaseA := [2]*gate{newGate(), newGate()}
	releaseB := [2]*gate{newGate(), newGate()}
	releaseAll := func() {
		for i := range 2 {
			releaseA[i].open()
			releaseB[i].open()
		}
	}
	t.Cleanup(releaseAll) // runs before the members' cleanups: they are registered later
	aStarted := make(chan int, 2)
	aCancelled := make(chan int, 2)
	aReturned := make(chan int, 2)
	bReached := make(chan int, 4)

	a := join(t, k, "slow", group, topic, "A", func(ctx context.Context, msg *mq.Message) error {
		part := partOf(msg)
		if idxOf(msg) != slowIdx {
			l.process(string(msg.Value))
			return nil
		}
		aStarted <- part
		select {
		case <-releaseA[part].ch:
		case <-ctx.Done():
			aCancelled <- part
			if variant == "honours_ctx" {
				aReturned <- part
				return ctx.Err()
			}
			<-releaseA[part].ch // carries on regardless
		}
		l.process(string(msg.Value))
		aReturned <- part
		return nil
	})
	for range 2 {
		select {
		case <-aStarted:
		case <-ctx.Done():
			t.Fatal("A never reached both slow messages")
		}
	}
	var dropping atomic.Bool
	var audit *commitAudit
	if variant == "lost" {
		described, err := k.Admin().DescribeGroups(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		members := described[group].Members
		if len(members) != 1 {
			t.Fatalf("group has %d members, want A alone", len(members))
		}
		aID := members[0].MemberID
		audit = auditCommits(k, group)
		dropping.Store(true)
		t.Cleanup(func() { dropping.Store(false) })
		k.Cluster.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
			k.Cluster.KeepControl()
			if hb, ok := req.(*kmsg.HeartbeatRequest); ok && hb.MemberID == aID && dropping.Load() {
				// A hears "all is well"; the group hears nothing from A.
				return hb.ResponseKind(), nil, true
			}
			return nil, nil, false
		})
	}
	b := join(t, k, "slow", group, topic, "B", func(ctx context.Context, msg *mq.Message) error {
		part := partOf(msg)
		if idxOf(msg) == slowIdx {
			bReached <- part
			select {
			case <-releaseB[part].ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		l.process(string(msg.Value))
		return nil
	})

	var problems []string
	// watch polls the committed offsets for a while; none may exceed limit.
	watch := func(parts []int, window time.Duration, limit int64, why string) map[int][]int64 {
		seen := map[int][]int64{}
		deadline := time.Now().Add(window)
		for time.Now().Before(deadline) {
			c, err := committed(ctx, k, group, topic)
			if err == nil {
				for _, x := range parts {
					o := c[int32(x)]
					if s := seen[x]; len(s) == 0 || s[len(s)-1] != o {
						seen[x] = append(s, o)
					}
					if o > limit {
						problems = append(problems, fmt.Sprintf("partition %d committed %d: %s", x, o, why))
						return seen
					}
				}
			}
			time.Sleep(50 * time.Millisecond) // polling period
		}
		return seen
	}
	recv := func(ch chan int, what string) int {
		select {
		case v := <-ch:
			return v
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
			return -1
		}
	}

	outcome := ""
	switch variant {
	case "honours_ctx":
		x := recv(aCancelled, "a callback of A to see its ctx cancelled after B joined")
		// A has returned; B gets X from offset 2 and hangs on the slow one.
		if part := recv(bReached, "B to reach the slow message of the moved partition"); part != x {
			t.Fatalf("B reached the slow message of partition %d, want %d", part, x)
		}
		seen := watch([]int{x}, 1500*time.Millisecond, slowIdx, "the slow message was committed though A gave it up")
		if s := seen[x]; len(s) == 0 || s[len(s)-1] != slowIdx {
			problems = append(problems, fmt.Sprintf("partition %d: committed %v while B hangs on offset %d; want %d (A's finished work)", x, s, slowIdx, slowIdx))
		}
		outcome = fmt.Sprintf("committed_X=%v", seen[x])
	case "ignores_ctx":
		x := recv(aCancelled, "a callback of A to see its ctx cancelled after B joined")
		// The revocation waits for A's callback: B must not get X meanwhile.
		// (Watched for a while: longer than the rebalance timeout.)
		deadline := time.After(5 * time.Second)
	wait:
		for {
			select {
			case part := <-bReached:
				if part == x {
					problems = append(problems, fmt.Sprintf("B got partition %d's slow message while A was still in its callback", x))
					break wait
				}
			case <-deadline:
				break wait
			}
		}
		releaseA[x].open()
		recv(aReturned, "A's callback to return once released")
		// A finished the slow message as the owner: its commit is
		// legitimate, and B starts after it.
		waitFor(t, waitLong, "A's commit of the slow message", func() bool {
			c, err := committed(ctx, k, group, topic)
			return err == nil && c[int32(x)] >= slowIdx+1
		})
		outcome = "revocation_waited_for_A"
	case "lost":
		// The group expels A; B takes both partitions and hangs in the
		// slow messages.
		recv(bReached, "B to reach a slow message")
		before, err := committed(ctx, k, group, topic)
		if err != nil {
			t.Fatal(err)
		}
		// A's callbacks return; A goes on with its batch and marks it.
		releaseA[0].open()
		releaseA[1].open()
		recv(aReturned, "A's callbacks to return")
		recv(aReturned, "A's callbacks to return")
		// Watched for a while; A rejoins meanwhile and may get a
		// partition back, legitimately: commits are checked against the
		// assignments of their generation (audit), the committed offsets
		// are reported.
		deadline := time.Now().Add(1500 * time.Millisecond)
		seen := map[int][]int64{}
		for time.Now().Before(deadline) {
			if c, err := committed(ctx, k, group, topic); err == nil {
				for x := range 2 {
					if s := seen[x]; len(s) == 0 || s[len(s)-1] != c[int32(x)] {
						seen[x] = append(s, c[int32(x)])
					}
				}
			}
			time.Sleep(50 * time.Millisecond) // polling period
		}
		outcome = fmt.Sprintf("committed_before=%v,committed_after_A_returned=%v", before, seen)
		dropping.Store(false)
	}
	releaseAll()
	waitProcessed(t, l)
	waitFor(t, waitLong, "both partitions committed to their ends", func() bool {
		c, err := committed(ctx, k, group, topic)
		return err == nil && c[0] == 5 && c[1] == 5
	})
	for _, m := range []*member{a, b} {
		cerr, serr := m.leave()
		if m == a && variant == "lost" && errors.Is(cerr, kerr.UnknownMemberID) {
			// The zombie's last commit is refused, and Close says so.
			t.Logf("A: Close = %v", cerr)
			cerr = nil
		}
		if cerr != nil || serr != nil {
			problems = append(problems, fmt.Sprintf("%s: Close = %v, Subscribe = %v", m.name, cerr, serr))
		}
	}

	commits := -1 // not audited
	if audit != nil {
		var bad []string
		commits, bad = audit.check()
		problems = append(problems, bad...)
	}
	sent, acked, failed, processed, lost, dup := l.figures()
	report(t, "slow_handler", "commits_audited", commits, "broker", brokerKind(k), "variant", variant, "outcome", strconv.Quote(outcome),
		"sent", sent, "acked", acked, "failed", failed, "processed", processed, "lost", lost, "dup", dup, "took", time.Since(start))
	if len(problems) > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(firstN(problems, 20), "\n"))
	}
	if lost != 0 {
		t.Errorf("%d messages lost: %v", lost, l.lostIDs(10))
	}
	maxDup := 0
	if variant == "lost" {
		maxDup = 10
	}
	if dup > maxDup {
		t.Errorf("%d duplicates, want at most %d", dup, maxDup)
	}
}

// commitAudit records, from inside the in-process broker, the partition
// assignments of each generation of a group (from the leader's SyncGroup)
// and every offset commit. A commit of a partition by a member, at a
// generation where another member is assigned that partition, is a commit
// by a member that no longer owns it.
//
// The group consumes one topic: partitions are keyed by number (commits
// may name the topic by id).
type commitAudit struct {
	mu      sync.Mutex
	owners  map[int32]map[int32]string // generation -> partition -> member
	members map[int32]map[string]bool  // generation -> members
	commits []auditedCommit
}

type auditedCommit struct {
	member string
	gen    int32
	at     time.Time
	parts  map[int32]int64
}

func auditCommits(k *mqtest.Kafka, group string) *commitAudit {
	a := &commitAudit{owners: map[int32]map[int32]string{}, members: map[int32]map[string]bool{}}
	k.Cluster.ControlKey(int16(kmsg.SyncGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		r, ok := req.(*kmsg.SyncGroupRequest)
		if !ok || r.Group != group || len(r.GroupAssignment) == 0 {
			return nil, nil, false
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		owners, members := map[int32]string{}, map[string]bool{}
		for _, ma := range r.GroupAssignment {
			members[ma.MemberID] = true
			var ca kmsg.ConsumerMemberAssignment
			if err := ca.ReadFrom(ma.MemberAssignment); err != nil {
				continue
			}
			for _, t := range ca.Topics {
				for _, p := range t.Partitions {
					owners[p] = ma.MemberID
				}
			}
		}
		a.owners[r.Generation], a.members[r.Generation] = owners, members
		return nil, nil, false
	})
	k.Cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		r, ok := req.(*kmsg.OffsetCommitRequest)
		if !ok || r.Group != group {
			return nil, nil, false
		}
		c := auditedCommit{member: r.MemberID, gen: r.Generation, at: time.Now(), parts: map[int32]int64{}}
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				c.parts[p.Partition] = p.Offset
			}
		}
		a.mu.Lock()
		a.commits = append(a.commits, c)
		a.mu.Unlock()
		return nil, nil, false
	})
	return a
}

// check returns how many commits the broker could accept (their member
// was in their generation) and those that committed a partition another
// member owned.
func (a *commitAudit) check() (int, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	var bad []string
	for _, c := range a.commits {
		if !a.members[c.gen][c.member] {
			continue // refused by the broker: unknown member or stale generation
		}
		n++
		for p, off := range c.parts {
			if owner, ok := a.owners[c.gen][p]; ok && owner != c.member {
				bad = append(bad, fmt.Sprintf("%s member %s committed partition %d at %d in generation %d, where %s owns it",
					c.at.Format("15:04:05.000"), c.member, p, off, c.gen, owner))
			}
		}
	}
	return n, bad
}

// gate is a channel closed once.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// keyForPartition returns a key that franz-go's default partitioner
// (murmur2, as Kafka's) puts on partition of a topic of n partitions.
func keyForPartition(partition, n int) string {
	for i := 0; ; i++ {
		k := "key-" + strconv.Itoa(i)
		if int(murmur2([]byte(k))&0x7fffffff)%n == partition {
			return k
		}
	}
}

// murmur2 is Kafka's key hash.
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

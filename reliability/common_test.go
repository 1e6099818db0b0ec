package reliability

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Environment variables of the suite.
const (
	// envSoak runs the longer soak figures ("1").
	envSoak = "MQ_SOAK"
	// envClusterBrokers names a 3-node cluster (RF 3, min.insync 2) for
	// the broker failure scenario.
	envClusterBrokers = "MQ_TEST_CLUSTER_BROKERS"
	// envStartCluster lets the broker failure scenario start (and stop)
	// the cluster itself with scripts/kafka.sh ("1").
	envStartCluster = "MQ_RELIABILITY_START_CLUSTER"
)

// waitLong bounds every wait of the suite: generous, the machine is shared.
const waitLong = 3 * time.Minute

func soak() bool { return os.Getenv(envSoak) == "1" }

// pick chooses a figure for -short, default and soak runs.
func pick(short, def, soakN int) int {
	switch {
	case soak():
		return soakN
	case testing.Short():
		return short
	}
	return def
}

func brokerKind(k *mqtest.Kafka) string {
	if k.Real() {
		return "real"
	}
	return "kfake"
}

// ctxFor is a context bounded by waitLong, cancelled at cleanup.
func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

// ctxForFlow is ctxFor for a feeder that paces its sends over flow: the
// soak figures' flows (5 and 10 minutes) outlast waitLong.
func ctxForFlow(t testing.TB, flow time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), flow+waitLong)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond every 10ms until it holds, failing t after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// id is a message's identity, carried in its value: fixed width, so that a
// child process writes fixed-size lines.
func id(i int) string { return fmt.Sprintf("%08d", i) }

// idNum parses an id back; -1 if it is not one.
func idNum(s string) int {
	if len(s) < 8 {
		return -1
	}
	n, err := strconv.Atoi(s[:8])
	if err != nil {
		return -1
	}
	return n
}

// report logs a scenario's figures as one parsable line.
func report(t testing.TB, scenario string, kv ...any) {
	t.Helper()
	var b strings.Builder
	b.WriteString("RESULT scenario=")
	b.WriteString(scenario)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if d, ok := v.(time.Duration); ok {
			v = d.Round(10 * time.Millisecond)
		}
		fmt.Fprintf(&b, " %v=%v", kv[i], v)
	}
	t.Log(b.String())
}

// tally is a scenario's ledger: what was sent, acknowledged, failed and
// processed, by message id.
type tally struct {
	mu        sync.Mutex
	sent      int
	acked     map[string]bool
	failed    map[string]error
	calls     map[string]int // Send callbacks (or SendSync returns) per id
	processed map[string]int
	total     int // processings, duplicates included
}

func newTally() *tally {
	return &tally{acked: map[string]bool{}, failed: map[string]error{}, calls: map[string]int{}, processed: map[string]int{}}
}

func (l *tally) send() {
	l.mu.Lock()
	l.sent++
	l.mu.Unlock()
}

// result records the outcome of one send.
func (l *tally) result(v string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[v]++
	if err == nil {
		l.acked[v] = true
		delete(l.failed, v)
		return
	}
	if !l.acked[v] {
		l.failed[v] = err
	}
}

func (l *tally) process(v string) {
	l.mu.Lock()
	l.processed[v]++
	l.total++
	l.mu.Unlock()
}

func (l *tally) ackedN() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *tally) uniqueN() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.processed)
}

// allProcessed reports whether every acknowledged message was processed.
func (l *tally) allProcessed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.processed) < len(l.acked) {
		return false
	}
	for v := range l.acked {
		if l.processed[v] == 0 {
			return false
		}
	}
	return true
}

// figures returns sent, acked, failed, processed (with duplicates), lost
// (acknowledged, never processed) and dup (processings beyond the first).
func (l *tally) figures() (sent, acked, failed, processed, lost, dup int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for v := range l.acked {
		if l.processed[v] == 0 {
			lost++
		}
	}
	return l.sent, len(l.acked), len(l.failed), l.total, lost, l.total - len(l.processed)
}

// lostIDs lists up to n acknowledged ids never processed.
func (l *tally) lostIDs(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for v := range l.acked {
		if l.processed[v] == 0 {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// waitProcessed waits until every acknowledged message was processed.
func waitProcessed(t testing.TB, l *tally) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !l.allProcessed() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s, acknowledged messages still unprocessed, e.g. %q", waitLong, l.lostIDs(10))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stream sends ids [from, from+n) with Send, key i%keys, pacing one message
// every pace (none when 0); it returns when every callback has run.
func stream(ctx context.Context, p mq.Producer, topic string, from, n, keys int, pace time.Duration, l *tally) {
	var wg sync.WaitGroup
	next := time.Now()
	for i := from; i < from+n; i++ {
		if ctx.Err() != nil {
			break
		}
		if pace > 0 {
			next = next.Add(pace)
			if d := time.Until(next); d > 0 {
				time.Sleep(d) // pacing the load, not synchronisation
			}
		}
		v := id(i)
		l.send()
		wg.Add(1)
		p.Send(ctx, &mq.Message{Topic: topic, Key: []byte(keyOf(i, keys)), Value: []byte(v)}, func(err error) {
			l.result(v, err)
			wg.Done()
		})
	}
	wg.Wait()
}

func keyOf(i, keys int) string { return "key-" + strconv.Itoa(i%keys) }

func newProducer(t testing.TB, k *mqtest.Kafka, service string) mq.Producer {
	t.Helper()
	p, err := mq.NewProducer(ctxFor(t), service, k.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// member is a consumer running Subscribe in a goroutine.
type member struct {
	name string
	c    mq.Consumer
	done chan error
	stop context.CancelFunc
}

func join(t testing.TB, k *mqtest.Kafka, service, group, topic, name string, cb mq.ConsumeCallback) *member {
	t.Helper()
	opts := k.Options()
	if os.Getenv("MQ_RELIABILITY_KGO_DEBUG") != "" {
		opts = append(opts, mq.WithClientOptions(kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelInfo, func() string { return name + " " + time.Now().Format("15:04:05.000 ") }))))
	}
	c, err := mq.NewConsumer(ctxFor(t), service, group, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{name: name, c: c, done: make(chan error, 1), stop: cancel}
	go func() { m.done <- c.Subscribe(ctx, []string{topic}, cb) }()
	t.Cleanup(func() { m.leave() })
	return m
}

// leave closes the member and returns what Close and Subscribe returned.
func (m *member) leave() (closeErr, subErr error) {
	closeErr = m.c.Close()
	m.stop()
	select {
	case subErr = <-m.done:
		m.done <- subErr // later calls see the same
	case <-time.After(waitLong):
		subErr = fmt.Errorf("%s: Subscribe did not return %s after Close", m.name, waitLong)
	}
	return closeErr, subErr
}

// where is a message's position in the log.
type where struct {
	p int32
	o int64
}

// layout maps message ids to their positions, from the topic's content.
type layout struct {
	at       map[string]where
	byOffset map[int32]map[int64]string
	ends     map[int32]int64
	copies   map[string]int // records per id (producer duplicates when > 1)
}

func readLayout(t testing.TB, k *mqtest.Kafka, topic string) *layout {
	t.Helper()
	recs, err := k.ReadAll(ctxFor(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	return layoutOf(recs)
}

func layoutOf(recs []*kgo.Record) *layout {
	l := &layout{at: map[string]where{}, byOffset: map[int32]map[int64]string{}, ends: map[int32]int64{}, copies: map[string]int{}}
	for _, r := range recs {
		v := string(r.Value)
		l.at[v] = where{r.Partition, r.Offset}
		l.copies[v]++
		if l.byOffset[r.Partition] == nil {
			l.byOffset[r.Partition] = map[int64]string{}
		}
		l.byOffset[r.Partition][r.Offset] = v
		if r.Offset+1 > l.ends[r.Partition] {
			l.ends[r.Partition] = r.Offset + 1
		}
	}
	return l
}

// committed reads group's committed offsets of topic.
func committed(ctx context.Context, k *mqtest.Kafka, group, topic string) (map[int32]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return k.Committed(ctx, group, topic)
}

// commitWatch polls a group's committed offsets in the background and
// checks that they never go backwards. Each snapshot carries the value of
// a processing counter read after the offsets were: every record below a
// committed offset must have been processed by then.
type commitWatch struct {
	mu        sync.Mutex
	snaps     []commitSnap
	backwards []string
	last      map[int32]int64
	errs      int
	stop      chan struct{}
	done      chan struct{}
}

type commitSnap struct {
	offsets map[int32]int64
	counter int64
}

func watchCommits(k *mqtest.Kafka, group, topic string, every time.Duration, counter *atomic.Int64) *commitWatch {
	w := &commitWatch{last: map[int32]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			w.poll(k, group, topic, counter)
			select {
			case <-w.stop:
				w.poll(k, group, topic, counter)
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *commitWatch) poll(k *mqtest.Kafka, group, topic string, counter *atomic.Int64) {
	offs, err := committed(context.Background(), k, group, topic)
	n := int64(0)
	if counter != nil {
		n = counter.Load()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.errs++
		return
	}
	w.snaps = append(w.snaps, commitSnap{offs, n})
	for p, o := range offs {
		if prev, ok := w.last[p]; ok && o < prev {
			w.backwards = append(w.backwards, fmt.Sprintf("partition %d: committed %d after %d", p, o, prev))
		}
		w.last[p] = o
	}
}

func (w *commitWatch) close() {
	close(w.stop)
	<-w.done
}

// checkCommittedProcessed checks every snapshot against the processing
// order: below each committed offset, every record's first processing had
// happened by the time the snapshot was taken. first maps an id to the
// counter value of its first processing. It returns the violations.
func checkCommittedProcessed(snaps []commitSnap, lay *layout, first map[string]int64) []string {
	// prefix[p][o] = latest first-processing among offsets <= o of p
	// (-1 once one of them was never processed).
	prefix := map[int32][]int64{}
	for p, end := range lay.ends {
		pre := make([]int64, end)
		var worst int64
		for o := int64(0); o < end; o++ {
			v, ok := lay.byOffset[p][o]
			f, done := first[v]
			switch {
			case worst < 0:
			case !ok || !done:
				worst = -1
			case f > worst:
				worst = f
			}
			pre[o] = worst
		}
		prefix[p] = pre
	}
	var bad []string
	for _, s := range snaps {
		for p, c := range s.offsets {
			if c <= 0 {
				continue
			}
			pre := prefix[p]
			switch {
			case c > int64(len(pre)):
				bad = append(bad, fmt.Sprintf("partition %d committed %d beyond its end %d", p, c, len(pre)))
			case pre[c-1] < 0:
				bad = append(bad, fmt.Sprintf("partition %d committed %d but a record below it was never processed", p, c))
			case pre[c-1] > s.counter:
				bad = append(bad, fmt.Sprintf("partition %d committed %d before the record at %d was processed (processing #%d, snapshot after #%d)",
					p, c, c-1, pre[c-1], s.counter))
			}
		}
	}
	return bad
}

// lowerMinSessionTimeout lets kfake accept sub-second session timeouts,
// so that a killed member leaves the group quickly. Real brokers keep
// their group.min.session.timeout.ms (6s by default): it returns false.
func lowerMinSessionTimeout(t testing.TB, k *mqtest.Kafka) bool {
	t.Helper()
	if k.Real() {
		return false
	}
	resp, err := k.Admin().AlterBrokerConfigs(ctxFor(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "group.min.session.timeout.ms", Value: kadm.StringPtr("200")}})
	if err == nil {
		for _, r := range resp {
			if r.Err != nil {
				err = r.Err
			}
		}
	}
	if err != nil {
		t.Logf("kfake refused group.min.session.timeout.ms: %v", err)
		return false
	}
	return true
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"

	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
)

// Scenario 1: a consumer in a child process is killed with SIGKILL while
// it works through its partitions, again and again; the next member of the
// group picks up.
//
// The child writes a message's id to its file, with one write(2), inside
// the callback, after the work and before returning: a line written is a
// message processed. (A write that returned is in the page cache and
// survives SIGKILL; fsync would only matter if the machine died.)
//
// After each kill the parent reads the group's committed offsets once they
// are stable and checks them against the children's lines:
//   - every record below a committed offset was processed (at-least-once);
//   - committed offsets never go backwards;
//   - each child processed each partition contiguously, starting exactly at
//     the offset committed when it joined (no skip, no rewind);
//   - the records the killed child processed at or above the committed
//     offsets ("processed, not yet committed": its uncommitted window) are
//     the only ones the next member may redeliver.
//
// Lost must be 0; duplicates must not exceed the sum of the uncommitted
// windows, which the background commit bounds to about
// (consumer.commit_interval + the worker's 100ms marking period) x rate.
func TestConsumerCrash(t *testing.T) {
	k := mqtest.New(t)
	fastLeave := lowerMinSessionTimeout(t, k)
	kills := pick(10, 12, 50) // mid-batch kills
	early := kills / 4        // extra kills while the child is still joining
	n := pick(6000, 20000, 200000)
	const partitions, keys = 6, 60
	work := time.Millisecond // per message, per partition: about 5,000 messages/s with 6 partitions
	seed := seedFromEnv(t)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))

	topic := k.NewTopic(t, partitions)
	group := mqtest.UniqueName(t)
	start := time.Now()
	l := newTally()
	stream(ctxFor(t), newProducer(t, k, "crash-feeder"), topic, 0, n, keys, 0, l)
	if l.ackedN() != n {
		t.Fatalf("only %d of %d messages acknowledged", l.ackedN(), n)
	}
	lay := readLayout(t, k, topic)
	if len(lay.at) != n {
		t.Fatalf("topic holds %d distinct messages, want %d", len(lay.at), n)
	}

	session, heartbeat := "6s", "500ms" // real brokers refuse less than 6s
	if fastLeave {
		session, heartbeat = "1s", "100ms"
	}
	const commitInterval = 100 * time.Millisecond
	childCfg := map[string]any{"consumer": map[string]any{
		"commit_interval": commitInterval.String(), "session_timeout": session, "heartbeat_interval": heartbeat,
		"rebalance_timeout": "5s", "close_timeout": "5s",
	}}
	if err := k.SetServiceConfig("crash-child", childCfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	processedOnce := map[string]bool{} // union of what every child processed
	prev := map[int32]int64{}          // committed offsets when the current child joined
	uncommittedBound := 0              // sum of the killed children's uncommitted windows
	maxWindow := 0
	var problems []string
	maxTarget := max(2, n*6/5/kills) // the kills work through about 60% of the messages
	runs := 0
	schedule := make([]bool, 0, kills+early) // true: mid-batch kill; false: early kill
	for range kills {
		schedule = append(schedule, true)
	}
	for range early {
		schedule = append(schedule, false)
	}
	rng.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })
	midBatch := 0
	for i, mid := range schedule {
		out := filepath.Join(dir, fmt.Sprintf("child-%02d.ids", i))
		ch := startChild(t, k, topic, group, out, filepath.Join(dir, fmt.Sprintf("child-%02d.log", i)), work)
		runs++
		if mid {
			target := 1 + rng.IntN(maxTarget)
			remaining := n - len(processedOnce)
			waitFor(t, waitLong, fmt.Sprintf("child %d to process %d messages", i, target), func() bool {
				c := countLines(out)
				return c >= target || c >= remaining || ch.exited()
			})
			if countLines(out) >= remaining {
				t.Logf("child %d reached the end of the backlog; no more kills", i)
			}
		} else {
			time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond) // a random point of the join
		}
		if ch.exited() {
			t.Fatalf("child %d exited on its own: %v\n%s", i, ch.err, tail(ch.logPath))
		}
		ch.kill()
		lines := readLines(t, out)
		if mid && len(lines) > 0 {
			midBatch++
		}
		now := settleCommitted(t, k, group, topic)

		// The child's runs: per partition, contiguous from where the group
		// had committed when it joined.
		byPart := map[int32][]int64{}
		for _, v := range lines {
			w, ok := lay.at[v]
			if !ok {
				problems = append(problems, fmt.Sprintf("child %d processed unknown id %q", i, v))
				continue
			}
			byPart[w.p] = append(byPart[w.p], w.o)
			processedOnce[v] = true
		}
		for p, offs := range byPart {
			if offs[0] != prev[p] {
				problems = append(problems, fmt.Sprintf("child %d started partition %d at offset %d, committed was %d", i, p, offs[0], prev[p]))
			}
			for j := 1; j < len(offs); j++ {
				if offs[j] != offs[j-1]+1 {
					problems = append(problems, fmt.Sprintf("child %d processed partition %d offset %d after %d", i, p, offs[j], offs[j-1]))
					break
				}
			}
		}
		// Committed offsets: forward only, and only over processed records.
		for p, c := range now {
			if c < prev[p] {
				problems = append(problems, fmt.Sprintf("after kill %d: partition %d committed went back from %d to %d", i, p, prev[p], c))
			}
			for o := prev[p]; o < c; o++ {
				if !processedOnce[lay.byOffset[p][o]] {
					problems = append(problems, fmt.Sprintf("after kill %d: partition %d committed %d, but offset %d was never processed", i, p, c, o))
					break
				}
			}
		}
		window := 0
		for _, v := range lines {
			w := lay.at[v]
			if w.o >= now[w.p] {
				window++
			}
		}
		uncommittedBound += window
		maxWindow = max(maxWindow, window)
		for _, v := range lines {
			l.process(v)
		}
		t.Logf("kill %d (mid-batch %v): child processed %d, uncommitted window %d, committed %v", i, mid, len(lines), window, now)
		prev = now
	}
	if midBatch < 10 && !testing.Short() {
		t.Errorf("only %d kills hit a child mid-batch; want at least 10", midBatch)
	}

	// A last member, in this process, takes over and finishes.
	final := join(t, k, "crash-child", group, topic, "final", func(ctx context.Context, msg *mq.Message) error {
		l.process(string(msg.Value))
		return nil
	})
	runs++
	waitProcessed(t, l)
	if cerr, serr := final.leave(); cerr != nil || serr != nil {
		t.Fatalf("last member: Close = %v, Subscribe = %v", cerr, serr)
	}
	end, err := committed(ctxFor(t), k, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p, e := range lay.ends {
		if end[p] != e {
			problems = append(problems, fmt.Sprintf("partition %d: committed %d at the end, want %d", p, end[p], e))
		}
	}

	sent, acked, failed, processed, lost, dup := l.figures()
	report(t, "crash", "broker", brokerKind(k), "runs", runs, "kills", len(schedule), "mid_batch_kills", midBatch,
		"sent", sent, "acked", acked, "failed", failed, "processed", processed, "lost", lost, "dup", dup,
		"dup_bound", uncommittedBound, "max_window", maxWindow, "commit_interval", commitInterval, "seed", seed, "took", time.Since(start))
	if len(problems) > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(firstN(problems, 20), "\n"))
	}
	if lost != 0 {
		t.Errorf("%d acknowledged messages never processed, e.g. %v", lost, l.lostIDs(10))
	}
	if dup > uncommittedBound {
		t.Errorf("%d duplicates, more than the %d messages processed and uncommitted when the children were killed", dup, uncommittedBound)
	}
}

func seedFromEnv(t testing.TB) int64 {
	if s := os.Getenv("MQ_RELIABILITY_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("MQ_RELIABILITY_SEED: %v", err)
		}
		return v
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d (MQ_RELIABILITY_SEED=%d reproduces the random choices)", seed, seed)
	return seed
}

// settleCommitted reads the committed offsets until three reads 100ms
// apart agree: a commit the killed child had already written to its socket
// may still land.
func settleCommitted(t testing.TB, k *mqtest.Kafka, group, topic string) map[int32]int64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last map[int32]int64
	stable := 0
	for stable < 3 {
		cur, err := committed(context.Background(), k, group, topic)
		switch {
		case err != nil:
			stable = 0
		case last != nil && reflect.DeepEqual(cur, last):
			stable++
		default:
			last, stable = cur, 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets of %s did not settle: %v (%v)", group, last, err)
		}
		time.Sleep(100 * time.Millisecond) // polling period
	}
	return last
}

// child is a crash-consumer process.
type child struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func startChild(t testing.TB, k *mqtest.Kafka, topic, group, out, logPath string, work time.Duration) *child {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envChild+"=crash-consumer",
		"MQ_REL_BROKERS="+strings.Join(k.Brokers, ","),
		"MQ_REL_TOPIC="+topic,
		"MQ_REL_GROUP="+group,
		"MQ_REL_OUT="+out,
		"MQ_REL_WORK="+work.String(),
		"MQ_REL_CONFIG="+mustJSON(serviceDoc(t, k, "crash-child")),
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	t.Cleanup(c.kill)
	return c
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-c.done
}

// serviceDoc reads back the service document the test wrote.
func serviceDoc(t testing.TB, k *mqtest.Kafka, service string) map[string]any {
	var doc map[string]any
	if err := k.Provider.Config().Get(context.Background(), mqtest.Env+"/"+service+"/kafka", &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// idLine is the size of a line of a child's file.
const idLine = 9

func countLines(path string) int {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return int(st.Size() / idLine)
}

// readLines returns the complete lines of a child's file.
func readLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for len(b) >= idLine {
		line := b[:idLine]
		b = b[idLine:]
		if line[idLine-1] != '\n' {
			t.Fatalf("%s: malformed line %q", path, line)
		}
		out = append(out, string(line[:idLine-1]))
	}
	return out
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// runCrashConsumer is the child process: a consumer of the group that
// writes each processed id to its file, until it is killed.
func runCrashConsumer() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "crash-consumer: "+format+"\n", args...)
		return 1
	}
	// Never outlive the test: exit when the parent goes away.
	parent := os.Getppid()
	go func() {
		for range time.Tick(200 * time.Millisecond) {
			if os.Getppid() != parent {
				os.Exit(3)
			}
		}
	}()
	work, err := time.ParseDuration(os.Getenv("MQ_REL_WORK"))
	if err != nil {
		return fail("MQ_REL_WORK: %v", err)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(os.Getenv("MQ_REL_CONFIG")), &doc); err != nil {
		return fail("MQ_REL_CONFIG: %v", err)
	}
	k, err := mqtest.Start(mqtest.WithBrokers(strings.Split(os.Getenv("MQ_REL_BROKERS"), ",")...))
	if err != nil {
		return fail("%v", err)
	}
	defer k.Close()
	if err := k.SetServiceConfig("crash-child", doc); err != nil {
		return fail("%v", err)
	}
	out, err := os.OpenFile(os.Getenv("MQ_REL_OUT"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := mq.NewConsumer(ctx, "crash-child", os.Getenv("MQ_REL_GROUP"), k.Options()...)
	if err != nil {
		return fail("%v", err)
	}
	var mu sync.Mutex
	err = c.Subscribe(ctx, []string{os.Getenv("MQ_REL_TOPIC")}, func(ctx context.Context, msg *mq.Message) error {
		time.Sleep(work) // the work
		line := append(bytes.Clone(msg.Value), '\n')
		if len(line) != idLine {
			return fmt.Errorf("value %q is not an id", msg.Value)
		}
		mu.Lock()
		defer mu.Unlock()
		_, err := out.Write(line) // one write(2): the line is whole or absent
		return err
	})
	if err != nil {
		return fail("Subscribe: %v", err)
	}
	return 0
}

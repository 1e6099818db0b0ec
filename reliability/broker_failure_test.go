package reliability

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/ceyewan/gochat/im-infra/mq/mqtest"
	"github.com/twmb/franz-go/pkg/kadm"
)

// clusterBrokers are the addresses scripts/kafka.sh gives its cluster.
const clusterBrokers = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"

// Scenario 4 (real cluster only): the leader of the partitions being
// written is killed with SIGKILL while a stream of Send and SendSync runs,
// then brought back. Topic RF 3, min.insync.replicas 2; producer acks=all,
// idempotent (mq's defaults). A consumer group reads throughout.
//
//   - Every acknowledged message is in the topic exactly once: no loss, no
//     producer duplicate (idempotence across the failover).
//   - No message is in the topic twice, acknowledged or not.
//   - Every message that failed reached its callback (or SendSync's return)
//     with an error; every Send got exactly one callback.
//   - The consumer group processed every acknowledged message.
func TestBrokerFailure(t *testing.T) {
	brokers := os.Getenv(envClusterBrokers)
	if brokers == "" {
		if os.Getenv(envStartCluster) != "1" {
			t.Skipf("needs a 3-node cluster: set %s=%s (scripts/kafka.sh start cluster), or %s=1 to let the test start it",
				envClusterBrokers, clusterBrokers, envStartCluster)
		}
		brokers = clusterBrokers
		startCluster(t)
	}
	k := mqtest.New(t, mqtest.WithBrokers(strings.Split(brokers, ",")...))
	ctx := ctxFor(t)
	start := time.Now()
	const partitions = 6
	topic := k.NewTopic(t, partitions)
	checkReplication(t, k, topic)
	if err := k.SetServiceConfig("failover", map[string]any{
		"producer": map[string]any{"delivery_timeout": "90s", "close_timeout": "60s"},
		"consumer": map[string]any{"session_timeout": "10s", "heartbeat_interval": "500ms"},
	}); err != nil {
		t.Fatal(err)
	}
	p, err := mq.NewProducer(ctx, "failover", k.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })

	l := newTally()
	group := mqtest.UniqueName(t)
	consumer := join(t, k, "failover", group, topic, "reader", func(ctx context.Context, msg *mq.Message) error {
		l.process(string(msg.Value))
		return nil
	})

	// The stream: Send at about 1,000 messages/s, SendSync one at a time
	// with a 2s deadline.
	var next atomic.Int64
	var syncErrs, sendErrs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // Send
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			v := id(int(next.Add(1)))
			l.send()
			p.Send(ctx, &mq.Message{Topic: topic, Key: []byte(v[4:]), Value: []byte(v)}, func(err error) {
				if err != nil {
					sendErrs.Add(1)
				}
				l.result(v, err)
			})
			time.Sleep(time.Millisecond) // pace the stream
		}
	}()
	go func() { // SendSync
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			v := id(int(next.Add(1)))
			l.send()
			// A short deadline: during the failover some SendSync calls
			// give up, with an error saying the outcome is unknown.
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := p.SendSync(sctx, &mq.Message{Topic: topic, Key: []byte(v[4:]), Value: []byte(v)})
			cancel()
			if err != nil {
				syncErrs.Add(1)
			}
			l.result(v, err)
		}
	}()
	stopStream := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	t.Cleanup(stopStream)

	waitFor(t, waitLong, "the stream to be acknowledged", func() bool { return l.ackedN() > 2000 })
	node, leads := busiestLeader(t, k, topic)
	ackedBeforeKill := l.ackedN()
	killedAt := time.Now()
	kafkaScript(t, "kill-node", strconv.Itoa(node))
	// Go on without it until its partitions have new leaders and the
	// stream flows again.
	waitFor(t, waitLong, "new leaders for the killed node's partitions", func() bool {
		_, l2 := leadersOf(k, topic)
		return len(l2) > 0 && l2[int32(nodeID(t, k, node))] == 0
	})
	failover := time.Since(killedAt)
	afterFailover := l.ackedN()
	waitFor(t, waitLong, "the stream to flow again", func() bool { return l.ackedN() > afterFailover+2000 })
	restartedAt := time.Now()
	kafkaScript(t, "start-node", strconv.Itoa(node))
	restart := time.Since(restartedAt)
	back := l.ackedN()
	waitFor(t, waitLong, "the stream to flow with the node back", func() bool { return l.ackedN() > back+2000 })
	stopStream()
	if err := p.Close(); err != nil {
		t.Errorf("producer Close: %v", err)
	}

	// Read back.
	lay := readLayout(t, k, topic)
	var problems []string
	l.mu.Lock()
	for v := range l.acked {
		if c := lay.copies[v]; c != 1 {
			problems = append(problems, fmt.Sprintf("acknowledged %s is in the topic %d times", v, c))
		}
	}
	for v, c := range lay.copies {
		if c > 1 && !l.acked[v] {
			problems = append(problems, fmt.Sprintf("failed %s is in the topic %d times", v, c))
		}
		if l.calls[v] == 0 {
			problems = append(problems, fmt.Sprintf("%s is in the topic but was never sent", v))
		}
	}
	noCallback, multi := 0, 0
	for i := 1; i <= int(next.Load()); i++ {
		switch n := l.calls[id(i)]; {
		case n == 0:
			noCallback++
		case n > 1:
			multi++
		}
	}
	failedInLog := 0
	for v, err := range l.failed {
		if err == nil {
			problems = append(problems, fmt.Sprintf("%s failed without an error", v))
		}
		if lay.copies[v] > 0 {
			failedInLog++
		}
	}
	var sample []string
	for v, err := range l.failed {
		if len(sample) < 3 {
			sample = append(sample, v+": "+err.Error())
		}
	}
	l.mu.Unlock()
	if multi > 0 {
		problems = append(problems, fmt.Sprintf("%d sends reported more than once", multi))
	}
	// The stream stops between sends: each id handed out was sent once.
	if noCallback > 0 {
		problems = append(problems, fmt.Sprintf("%d sends never reported", noCallback))
	}
	waitProcessed(t, l)
	if cerr, serr := consumer.leave(); cerr != nil || serr != nil {
		problems = append(problems, fmt.Sprintf("consumer: Close = %v, Subscribe = %v", cerr, serr))
	}
	sent, acked, failed, processed, lost, dup := l.figures()
	producerDups := 0
	for _, c := range lay.copies {
		if c > 1 {
			producerDups += c - 1
		}
	}
	report(t, "broker_failure", "broker", "real_cluster", "killed_node", node, "partitions_led", leads,
		"sent", sent, "acked", acked, "failed", failed, "failed_in_log", failedInLog, "send_errors", sendErrs.Load(), "sync_errors", syncErrs.Load(),
		"in_log", len(lay.copies), "producer_dup", producerDups, "processed", processed, "lost", lost, "dup", dup,
		"acked_before_kill", ackedBeforeKill, "failover", failover, "restart", restart, "took", time.Since(start))
	if len(sample) > 0 {
		t.Logf("failures, e.g.: %v", sample)
	}
	if len(problems) > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(firstN(problems, 20), "\n"))
	}
	if lost != 0 {
		t.Errorf("%d acknowledged messages never processed: %v", lost, l.lostIDs(10))
	}
}

// checkReplication insists on the cluster the scenario is about.
func checkReplication(t *testing.T, k *mqtest.Kafka, topic string) {
	t.Helper()
	md, err := k.Admin().Metadata(ctxFor(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range md.Topics[topic].Partitions {
		if len(p.Replicas) != 3 {
			t.Fatalf("partition %d has %d replicas; the scenario needs replication factor 3 (scripts/kafka.sh start cluster)", p.Partition, len(p.Replicas))
		}
	}
	rc, err := k.Admin().DescribeTopicConfigs(ctxFor(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rc {
		for _, c := range r.Configs {
			if c.Key == "min.insync.replicas" && (c.Value == nil || *c.Value != "2") {
				t.Fatalf("min.insync.replicas is %v; the scenario needs 2", c.MaybeValue())
			}
		}
	}
}

// leadersOf counts the partitions each broker leads.
func leadersOf(k *mqtest.Kafka, topic string) (kadm.Metadata, map[int32]int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := k.Admin().Metadata(ctx, topic)
	if err != nil {
		return md, nil
	}
	leads := map[int32]int{}
	for _, p := range md.Topics[topic].Partitions {
		if p.Leader >= 0 && p.Err == nil {
			leads[p.Leader]++
		}
	}
	return md, leads
}

// busiestLeader returns the script's node number of the broker leading
// the most partitions of topic, and how many it leads.
func busiestLeader(t *testing.T, k *mqtest.Kafka, topic string) (node, leads int) {
	t.Helper()
	md, counts := leadersOf(k, topic)
	var best int32 = -1
	for b, n := range counts {
		if best < 0 || n > counts[best] || n == counts[best] && b < best {
			best = b
		}
	}
	if best < 0 {
		t.Fatalf("no leader for %s", topic)
	}
	for _, b := range md.Brokers {
		if b.NodeID == best {
			return int(b.Port) - 19091, counts[best] // scripts/kafka.sh: node N listens on 19091+N
		}
	}
	t.Fatalf("broker %d not in metadata", best)
	return 0, 0
}

// nodeID returns the broker id of the script's node N.
func nodeID(t *testing.T, k *mqtest.Kafka, node int) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	brokers, err := k.Admin().ListBrokers(ctx)
	if err == nil {
		for _, b := range brokers {
			if int(b.Port)-19091 == node {
				return int(b.NodeID)
			}
		}
	}
	return node // scripts/kafka.sh: node.id = N
}

// kafkaScript runs scripts/kafka.sh.
func kafkaScript(t testing.TB, args ...string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "scripts", "kafka.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kafka.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("kafka.sh %s: %s", strings.Join(args, " "), strings.TrimSpace(lastLine(string(out))))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// startCluster starts scripts/kafka.sh's 3-node cluster for this test and
// stops it at cleanup.
func startCluster(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { kafkaScript(t, "stop", "cluster") })
	kafkaScript(t, "start", "cluster")
}

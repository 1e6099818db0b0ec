// Command benchmarks compares mq with raw franz-go, segmentio/kafka-go and
// IBM/sarama on one broker: async produce, concurrent synchronous produce,
// consume with a no-op callback (marks and commits on), end-to-end latency
// at fixed rates, and an I/O-bound handler. See ../BENCHMARKS.md.
//
//	go run .                                      # in-process kfake broker
//	go run . -brokers 127.0.0.1:9092              # a real Kafka (scripts/kafka.sh start single)
//	go run . -quick                               # ~1 minute smoke run
//	go run . -json results/kfake.json -png results/kfake.png
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
)

type flags struct {
	brokers             string
	n                   int
	syncN               int
	syncConc            int
	size                int
	partitions          int
	rounds              int
	compression         string
	rates               []int
	latencyDur          time.Duration
	ioN                 int
	ioParts             int
	ioSleep             time.Duration
	java                bool
	brokerWarmup        time.Duration
	kafkaGoBatchTimeout time.Duration
	kafkaScript         string
	jsonOut             string
	pngOut              string
	cpuprofile          string
	only                *regexp.Regexp
	quick               bool
	verbose             bool
}

func parseFlags() *flags {
	f := &flags{}
	var rates, only string
	flag.StringVar(&f.brokers, "brokers", "", "comma-separated brokers of a real Kafka; empty: an in-process kfake cluster")
	flag.IntVar(&f.n, "n", 500_000, "messages per produce/consume measurement (long enough that a GC cycle or a scheduling hiccup does not decide a round)")
	flag.IntVar(&f.syncN, "sync-n", 0, "messages per SendSync measurement (default n/4)")
	flag.IntVar(&f.syncConc, "sync-concurrency", 64, "goroutines calling SendSync / ProduceSync")
	flag.IntVar(&f.size, "size", 256, "value size in bytes")
	flag.IntVar(&f.partitions, "partitions", 6, "partitions of each throughput topic")
	flag.IntVar(&f.rounds, "rounds", 5, "interleaved rounds of every client (throughput and latency); the median is reported")
	flag.StringVar(&f.compression, "compression", "none", "compression of every producer: none or snappy")
	flag.StringVar(&rates, "rates", "1000,10000,50000", "end-to-end latency rates in msg/s")
	flag.DurationVar(&f.latencyDur, "latency-duration", 4*time.Second, "measured time per latency rate and round (after a 1s warm-up)")
	flag.IntVar(&f.ioN, "io-n", 6000, "messages of the I/O-bound handler test")
	flag.IntVar(&f.ioParts, "io-partitions", 12, "partitions of the I/O-bound handler test")
	flag.DurationVar(&f.ioSleep, "io-sleep", time.Millisecond, "sleep per message of the I/O-bound handler")
	flag.DurationVar(&f.kafkaGoBatchTimeout, "kafkago-batch-timeout", 100*time.Millisecond, "kafka-go Writer.BatchTimeout (its linger; 100ms measured best, its default is 1s)")
	flag.DurationVar(&f.brokerWarmup, "broker-warmup", 75*time.Second, "on a real broker, produce with raw franz-go for this long before the clients' warm-up, so that the rounds do not measure the broker's own warm-up (0: none)")
	flag.BoolVar(&f.java, "java", true, "on a real broker, also run Kafka's ProducerPerformance / ConsumerPerformance")
	flag.StringVar(&f.kafkaScript, "kafka-script", "../scripts/kafka.sh", "scripts/kafka.sh, for the Java tools' classpath")
	flag.StringVar(&f.jsonOut, "json", "", "write the results as JSON to this file")
	flag.StringVar(&f.pngOut, "png", "", "write a chart of the results to this PNG file")
	flag.StringVar(&f.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.StringVar(&only, "only", "", "run only the measurements whose id (e.g. produce/mq, consume/franz-go, latency, io, java) matches this regexp")
	flag.BoolVar(&f.verbose, "v", false, "log each topic's set-up")
	flag.BoolVar(&f.quick, "quick", false, "smoke run (~1 min): 50k messages, 1 round, 2 latency rates of 2s, 1200 I/O messages, 5s broker warm-up")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if f.quick {
		if !set["n"] {
			f.n = 50_000
		}
		if !set["rounds"] {
			f.rounds = 1
		}
		if !set["rates"] {
			rates = "1000,10000"
		}
		if !set["latency-duration"] {
			f.latencyDur = 2 * time.Second
		}
		if !set["io-n"] {
			f.ioN = 1200
		}
		if !set["broker-warmup"] {
			f.brokerWarmup = 5 * time.Second
		}
	}
	if f.syncN == 0 {
		f.syncN = f.n / 4
	}
	for _, r := range strings.Split(rates, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		v, err := strconv.Atoi(r)
		if err != nil || v <= 0 {
			log.Fatalf("bad -rates %q", rates)
		}
		f.rates = append(f.rates, v)
	}
	if f.compression != "none" && f.compression != "snappy" {
		log.Fatalf("-compression %q: want none or snappy", f.compression)
	}
	if only != "" {
		f.only = regexp.MustCompile(only)
	}
	return f
}

func (f *flags) want(id string) bool { return f.only == nil || f.only.MatchString(id) }

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("bench: ")
	f := parseFlags()
	// mq logs through clog's default logger: warnings only.
	if err := clog.Init(context.Background(), &clog.Config{Level: "warn", Format: "console", Output: "stderr"}); err != nil {
		log.Fatal(err)
	}
	if f.cpuprofile != "" {
		pf, err := os.Create(f.cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = pf.Close()
		}()
	}
	start := time.Now()
	rep, err := run(f)
	if err != nil {
		log.Print(err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
	rep.WallSeconds = time.Since(start).Seconds()
	printReport(os.Stdout, rep)
	if f.jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(f.jsonOut, append(b, '\n'), 0o644); err != nil {
			log.Fatal(err)
		}
		log.Printf("wrote %s", f.jsonOut)
	}
	if f.pngOut != "" {
		if err := writeChart(f.pngOut, rep); err != nil {
			log.Fatal(err)
		}
		log.Printf("wrote %s", f.pngOut)
	}
}

func run(f *flags) (*report, error) {
	ctx := context.Background()
	b, err := startBroker(f)
	if err != nil {
		return nil, err
	}
	defer b.close()
	rep := newReport(f, b)
	log.Printf("broker %s (%s), %d msgs x %d B, %d partitions, %d rounds, compression %s, GOMAXPROCS %d",
		strings.Join(b.brokers, ","), rep.Machine.Broker, f.n, f.size, f.partitions, f.rounds, f.compression, runtime.GOMAXPROCS(0))

	tp := newThroughput(f, b)
	if err := tp.warmUp(ctx); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	for round := 0; round < f.rounds; round++ {
		log.Printf("round %d/%d", round+1, f.rounds)
		if err := tp.round(ctx, round); err != nil {
			return nil, fmt.Errorf("round %d: %w", round+1, err)
		}
	}
	rep.Throughput = tp.results()

	if f.want("latency") {
		lat, err := runLatency(ctx, f, b)
		if err != nil {
			return nil, fmt.Errorf("latency: %w", err)
		}
		rep.Latency = lat
	}
	if f.want("io") {
		io, err := runIOBound(ctx, f, b)
		if err != nil {
			return nil, fmt.Errorf("io-bound: %w", err)
		}
		rep.IOBound = io
	}
	return rep, nil
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Kafka's own perf tools, run on their classpath from scripts/kafka.sh with
// a full JIT (kafka.sh run limits tools to C1, fine for admin tools but not
// for a throughput reference).

var (
	javaCPOnce sync.Once
	javaCP     string
	javaCPErr  error
)

func (t *throughput) javaClasspath() (string, error) {
	javaCPOnce.Do(func() {
		out, err := exec.Command("bash", t.f.kafkaScript, "perf-classpath").Output()
		if err != nil {
			javaCPErr = fmt.Errorf("%s perf-classpath: %w", t.f.kafkaScript, err)
			return
		}
		javaCP = strings.TrimSpace(string(out))
	})
	return javaCP, javaCPErr
}

func (t *throughput) runJava(ctx context.Context, main string, args ...string) (string, float64, error) {
	cp, err := t.javaClasspath()
	if err != nil {
		return "", 0, err
	}
	cmd := exec.CommandContext(ctx, "java", append([]string{"-Xms256m", "-Xmx512m", "-cp", cp, main}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", 0, fmt.Errorf("%s: %w\n%s%s", main, err, stdout.String(), stderr.String())
	}
	cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return stdout.String(), cpu, nil
}

// "200000 records sent, 151630.0 records/sec (37.02 MB/sec), ..." and, with
// --warmup-records, "100000 steady state records sent, 69979.0 records/sec ...".
var (
	producerPerfLine   = regexp.MustCompile(`(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)`)
	producerPerfSteady = regexp.MustCompile(`(\d+) steady state records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)`)
)

func (t *throughput) javaProduce(ctx context.Context, topic string, n int) (sample, error) {
	compression := t.f.compression
	out, cpu, err := t.runJava(ctx, "org.apache.kafka.tools.ProducerPerformance",
		"--bootstrap-server", strings.Join(t.b.brokers, ","),
		// n/2 warm-up records first (JIT): the steady state is the next n.
		"--topic", topic, "--num-records", strconv.Itoa(n+n/2), "--warmup-records", strconv.Itoa(n/2),
		"--record-size", strconv.Itoa(t.f.size),
		"--throughput", "-1",
		"--command-property", "acks=all", "enable.idempotence=true", "compression.type="+compression,
		"linger.ms=5", "batch.size=1000012")
	if err != nil {
		return sample{}, err
	}
	m := producerPerfSteady.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		m = producerPerfLine.FindAllStringSubmatch(out, -1)
	}
	if len(m) == 0 {
		return sample{}, fmt.Errorf("no throughput line in ProducerPerformance output:\n%s", out)
	}
	last := m[len(m)-1] // the final summary
	rate, _ := strconv.ParseFloat(last[2], 64)
	return sample{Seconds: float64(n) / rate, Rate: rate, CPU: cpu}, nil
}

// ConsumerPerformance prints a CSV header and one line of values:
// start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
// nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec.
// fetch.* excludes the group join, like the Go consumers' first-to-last window.
func (t *throughput) javaConsume(ctx context.Context, topic string, n int) (sample, error) {
	out, cpu, err := t.runJava(ctx, "org.apache.kafka.tools.ConsumerPerformance",
		"--bootstrap-server", strings.Join(t.b.brokers, ","),
		"--topic", topic, "--num-records", strconv.Itoa(n), "--group", uniqueName("java"),
		"--timeout", "60000")
	if err != nil {
		return sample{}, err
	}
	var header, values []string
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Split(line, ",")
		for i := range fields {
			fields[i] = strings.TrimSpace(fields[i])
		}
		if len(fields) >= 10 && fields[0] == "start.time" {
			header = fields
		} else if header != nil && len(fields) == len(header) {
			values = fields
		}
	}
	col := func(name string) (float64, error) {
		for i, h := range header {
			if h == name {
				return strconv.ParseFloat(values[i], 64)
			}
		}
		return 0, fmt.Errorf("no column %s in ConsumerPerformance output:\n%s", name, out)
	}
	if values == nil {
		return sample{}, fmt.Errorf("no result line in ConsumerPerformance output:\n%s", out)
	}
	got, err := col("data.consumed.in.nMsg")
	if err != nil {
		return sample{}, err
	}
	if int(got) < n {
		return sample{}, fmt.Errorf("ConsumerPerformance consumed %d of %d", int(got), n)
	}
	rate, err := col("fetch.nMsg.sec")
	if err != nil {
		return sample{}, err
	}
	fetchMs, err := col("fetch.time.ms")
	if err != nil {
		return sample{}, err
	}
	rebalanceMs, err := col("rebalance.time.ms")
	if err != nil {
		return sample{}, err
	}
	return sample{Seconds: fetchMs / 1000, Join: rebalanceMs / 1000, Rate: rate, CPU: cpu}, nil
}

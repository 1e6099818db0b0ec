package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

type runConfig struct {
	Msgs            int     `json:"msgs"`
	SyncMsgs        int     `json:"sync_msgs"`
	SyncConcurrency int     `json:"sync_concurrency"`
	ValueBytes      int     `json:"value_bytes"`
	Keys            int     `json:"keys"`
	Partitions      int     `json:"partitions"`
	Rounds          int     `json:"rounds"`
	Compression     string  `json:"compression"`
	Rates           []int   `json:"latency_rates"`
	LatencySeconds  float64 `json:"latency_seconds"`
	Quick           bool    `json:"quick"`
	Command         string  `json:"command"`
}

type report struct {
	Time        string             `json:"time"`
	Machine     machine            `json:"machine"`
	Config      runConfig          `json:"config"`
	Throughput  []throughputResult `json:"throughput"`
	Latency     []latencyResult    `json:"latency,omitempty"`
	IOBound     *ioResult          `json:"io_bound,omitempty"`
	WallSeconds float64            `json:"wall_seconds"`
}

func newReport(f *flags, b *broker) *report {
	return &report{
		Time:    time.Now().UTC().Format(time.RFC3339),
		Machine: describeMachine(b),
		Config: runConfig{
			Msgs: f.n, SyncMsgs: f.syncN, SyncConcurrency: f.syncConc, ValueBytes: f.size, Keys: 1024,
			Partitions: f.partitions, Rounds: f.rounds, Compression: f.compression,
			Rates: f.rates, LatencySeconds: f.latencyDur.Seconds(), Quick: f.quick,
			Command: commandLine(),
		},
	}
}

func printReport(w io.Writer, r *report) {
	m := r.Machine
	fmt.Fprintf(w, "\nbroker: %s (%s)\nmachine: %s, %d cores (GOMAXPROCS %d), %s\nclients: %s\n",
		m.Broker, m.Brokers, m.CPU, m.Cores, m.GOMAXPROCS, m.Go, m.Clients)
	c := r.Config
	fmt.Fprintf(w, "%d msgs (sync: %d, %d goroutines) x %d B values, %d keys, %d partitions, compression %s, median of %d interleaved rounds\n\n",
		c.Msgs, c.SyncMsgs, c.SyncConcurrency, c.ValueBytes, c.Keys, c.Partitions, c.Compression, c.Rounds)
	if len(r.Throughput) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "kind\tclient\tmsg/s\tMB/s\tx franz-go\tCPU us/msg\trec/batch\tGCs\trounds (msg/s)\tAPI\t")
		for _, t := range r.Throughput {
			var rounds []string
			for _, s := range t.Samples {
				rate := s.Rate
				if rate == 0 {
					rate = float64(t.Msgs) / s.Seconds
				}
				rounds = append(rounds, fmt.Sprintf("%.0f", rate))
			}
			ratio := "-"
			if t.Ratio > 0 {
				ratio = fmt.Sprintf("%.2f", t.Ratio)
			}
			batch := "-"
			if t.RecsPerBatch > 0 {
				batch = fmt.Sprintf("%.0f", t.RecsPerBatch)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t%s\t%.2f\t%s\t%.0f\t%s\t%s\t\n", t.Kind, t.Client, t.MsgsPerSec, t.MBPerSec, ratio, t.CPUus, batch, t.GCs, strings.Join(rounds, " "), t.API)
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.Latency) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "latency (median of %d)\ttarget msg/s\tachieved\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\tkept up\t\n", r.Config.Rounds)
		for _, l := range r.Latency {
			kept := "yes"
			if !l.KeptUp {
				kept = "NO: " + l.Diagnosis
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t\n", l.Client, l.Target, l.Achieved, l.P50ms, l.P99ms, l.P999ms, l.MaxMs, kept)
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}
	if io := r.IOBound; io != nil {
		fmt.Fprintf(w, "I/O-bound handler (%.0f ms sleep, %d msgs, %d partitions): mq %.0f msg/s, one serial poll loop %.0f msg/s: %.1fx\n\n",
			io.SleepMs, io.Msgs, io.Partitions, io.MQMsgsPerSec, io.RawMsgsPerSec, io.Ratio)
	}
	fmt.Fprintf(w, "wall time %.0fs\n", r.WallSeconds)
}

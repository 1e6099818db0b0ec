package main

import "runtime/metrics"

// gcStats is a reading of the runtime's garbage collection counters.
type gcStats struct {
	cycles uint64
	cpu    float64 // seconds, the runtime's estimate
	live   uint64  // bytes
}

var gcMetrics = []string{"/gc/cycles/total:gc-cycles", "/cpu/classes/gc/total:cpu-seconds", "/gc/heap/live:bytes"}

func readGC() gcStats {
	s := make([]metrics.Sample, len(gcMetrics))
	for i, name := range gcMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	return gcStats{cycles: s[0].Value.Uint64(), cpu: s[1].Value.Float64(), live: s[2].Value.Uint64()}
}

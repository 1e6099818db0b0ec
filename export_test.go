package mq

// Exported for the benchmarks of package mq_test (bench_test.go).
var (
	ToRecord   = toRecord
	FromRecord = fromRecord
)

# The commands of mq. `make test` is the one the README and CI run.
MODULES := . infra/clog infra/coord
GO_TEST := go test -race -count=1

.PHONY: test lint test-kafka test-coord-etcd reliability fuzz bench quickstart

# Vet and tests of every module, with -race, on the in-process broker
# (franz-go's kfake) and an embedded etcd: nothing to set up.
test:
	@set -e; for m in $(MODULES); do echo "== $$m"; (cd $$m && go vet ./... && $(GO_TEST) ./...); done
	@echo "== benchmarks (vet only)"; cd benchmarks && go vet ./...

# gofmt and staticcheck on every module.
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	@set -e; for m in $(MODULES) benchmarks; do echo "== staticcheck $$m"; (cd $$m && $(STATICCHECK) ./...); done

# The same suite against a real Kafka (scripts/kafka.sh start single).
test-kafka:
	MQ_TEST_BROKERS=$${MQ_TEST_BROKERS:-127.0.0.1:9092} $(GO_TEST) ./...

# coord's and mq's config tests against an etcd server process.
test-coord-etcd:
	cd infra/coord && COORD_TEST_ETCD_ENDPOINTS=$${COORD_TEST_ETCD_ENDPOINTS:-127.0.0.1:23790} $(GO_TEST) ./...
	COORD_TEST_ETCD_ENDPOINTS=$${COORD_TEST_ETCD_ENDPOINTS:-127.0.0.1:23790} $(GO_TEST) -run 'Etcd' .

# The fault and load suite (RELIABILITY.md).
reliability:
	$(GO_TEST) -v ./reliability

# Each fuzz target for a short fixed time.
FUZZTIME ?= 20s
fuzz:
	@set -e; for f in $$(go test -list 'Fuzz.*' . | grep ^Fuzz); do go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) .; done

# Benchmarks of the per-message paths, and the comparison harness (BENCHMARKS.md).
bench:
	go test -run '^$$' -bench . -benchmem .
	cd benchmarks && go run . -quick

quickstart:
	go run ./examples/quickstart

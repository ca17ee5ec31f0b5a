# Smart Maintenance: the two commands are `make demo` and `make test`.
# Builds go to $CARGO_TARGET_DIR (outside the clone) so that repeated runs are incremental.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/sm-target
STACK := deploy/local/stack
WITH_STACK := deploy/local/with-stack

.PHONY: demo test lint bench stack-up stack-down stack-status

## Brings the local stack up if needed, starts the services, runs the end-to-end demo and
## prints what happened. Leaves the stack running (`make stack-down` stops it).
demo:
	$(STACK) up
	cargo build --release --bins
	deploy/local/demo

## Every test: unit, hermetic (mock cluster) and against the real stack. The end-to-end
## tests run the service binaries as processes, so those are built first. Starts the stack if
## it is not running, and stops it afterwards if it started it.
test:
	cargo build --workspace --bins --locked
	$(WITH_STACK) cargo test --workspace --locked --no-fail-fast

## Formatting and lints (warnings are errors).
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

## Benchmarks (they print figures and ratios against a baseline measured in the same run):
## runtime and ingestion throughput, projection writer vs COPY, publish-to-projection latency,
## ListReadings under 32 concurrent clients, the prediction agent, Predict latency, the audit log's
## Merkle tree, the scheduling optimiser against greedy and the proven optimum.
bench:
	$(STACK) up
	cargo build --release --bins
	cargo bench -p sm-passthrough --bench throughput
	cargo bench -p sm-ingestion --bench throughput
	cargo bench -p sm-projector --bench writer
	cargo bench -p sm-anomaly --bench agent
	cargo bench -p sm-analytics --bench detectors
	cargo bench -p sm-analytics --bench drift
	cargo bench -p sm-models --bench predict
	cargo bench -p sm-system-tests --bench latency
	cargo bench -p sm-query --bench list_readings
	cargo bench -p sm-prediction --bench agent
	cargo bench -p sm-query --bench predict
	cargo bench -p sm-audit --bench merkle
	cargo bench -p sm-planner --bench planner

stack-up:
	$(STACK) up
stack-down:
	$(STACK) down
stack-status:
	$(STACK) status

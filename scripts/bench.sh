#!/usr/bin/env bash
# bench.sh: runs every benchmark of `make bench` and prints their tables.
# Each table gives ratios against a yardstick measured in the same run.
set -euo pipefail
build=${BUILD:-build}
work="$build/bench-data"
mkdir -p "$work"
"$build/bench/bench_prune" "$build/shears" "$work" "${BENCH_RUNS:-5}"
"$build/bench/bench_grad" "$build/shears" "$work" "${BENCH_RUNS_GRAD:-3}"
scripts/bench_service.sh "$build/shears" "$work" "$work/model-bf16/model.safetensors" "${BENCH_RUNS:-5}"
BENCH_FIXTURES=${BENCH_FIXTURES:-tests/fixtures}
"$build/bench/bench_methods" "$build/shears" "$BENCH_FIXTURES" "${BENCH_RUNS_METHODS:-3}"
"$build/bench/bench_pipeline" "$build/shears" "$work" "${BENCH_RUNS_PIPELINE:-3}"

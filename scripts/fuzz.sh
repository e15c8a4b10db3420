#!/usr/bin/env bash
# fuzz.sh: runs every libFuzzer target in BUILD/fuzzers for SECONDS each,
# from a copy of its committed seeds (tests/fuzz/corpus/<target>), so the
# corpus it grows stays under BUILD. A crash, leak or sanitizer report
# fails the run; its input lands in BUILD/crashes/ (make it a regression
# test). Prints each target's executions and coverage.
#
#   scripts/fuzz.sh build/fuzz 60 [target...]
set -euo pipefail
build=${1:?usage: fuzz.sh BUILD SECONDS [target...]}
seconds=${2:?usage: fuzz.sh BUILD SECONDS [target...]}
shift 2
targets=("$@")
if ((${#targets[@]} == 0)); then
  for b in "$build"/fuzzers/*; do targets+=("$(basename "$b")"); done
fi
mkdir -p "$build/crashes"
status=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  mkdir -p "$corpus"
  if [[ -d "tests/fuzz/corpus/$t" ]]; then
    cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  fi
  log="$build/$t.log"
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     "$build/fuzzers/$t" "$corpus" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$build/crashes/$t-" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1)
    printf 'fuzz %-18s ok: %s runs in %ss, %s, %s\n' "$t" "${execs:-?}" \
      "$seconds" "${cov:-cov: ?}" "${ft:-ft: ?}"
  else
    echo "fuzz $t FAILED; see $log and $build/crashes/" >&2
    tail -30 "$log" >&2
    status=1
  fi
done
exit "$status"

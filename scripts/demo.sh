#!/usr/bin/env bash
# demo.sh: prunes the bundled Llama fixture with magnitude 2:4 and prints
# the report summary and the first layers of the full report.
set -euo pipefail
bin=${SHEARS_BIN:-build/shears}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" prune --model tests/fixtures/llama-kjv --out "$out/pruned" \
  --method magnitude --pattern 2:4 --report "$out/report.json"
echo
echo "report ($out/report.json), first layers:"
head -c 1200 "$out/report.json"; echo " ..."

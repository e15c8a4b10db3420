#!/bin/sh
# quant-table.sh: README's GPTQ-against-RTN table and the compressed sizes,
# on the fixture Llama. Usage: tools/quant-table.sh [SHEARS_BIN]
set -eu
BIN=${1:-build/shears}
F=tests/fixtures
C=$F/llama-kjv-data/calibration.safetensors
E=$F/llama-kjv-data/evaluation.safetensors
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
run() { # prints "perplexity bits-per-weight" of one job
    rm -rf "$OUT/o"
    "$BIN" prune --model $F/llama-kjv --out "$OUT/o" --evaluation $E \
        --report "$OUT/r.json" --quiet "$@" >/dev/null
    jq -r '"\(.metric.pruned * 10000 | round / 10000) \(.storage.targets.bits_per_weight * 100 | round / 100)"' "$OUT/r.json"
}
for b in 8 4 3 2; do
    for g in 0 128; do
        echo "bits $b group $g: gptq $(run --method sparsegpt --sparsity 0 \
            --quantize $b:$g --calibration $C) rtn $(run --method magnitude \
            --sparsity 0 --quantize $b:$g --quantize-method rtn)"
    done
done
echo "wanda 0.5 + 4 bits: rtn $(run --method wanda --sparsity 0.5 --quantize 4 \
    --quantize-method rtn --calibration $C) gptq $(run --method wanda \
    --sparsity 0.5 --quantize 4 --calibration $C)"
echo "magnitude 0.5 + 4 bits: rtn $(run --method magnitude --sparsity 0.5 \
    --quantize 4 --quantize-method rtn) gptq $(run --method magnitude \
    --sparsity 0.5 --quantize 4 --calibration $C)"
ct="--format compressed-tensors --calibration $C --method sparsegpt"
echo "2:4 + 8 bits symmetric: $(run $ct --pattern 2:4 --quantize 8 --symmetric)"
echo "4 bits, groups of 128: $(run $ct --sparsity 0 --quantize 4:128)"
echo "50%, sparse-bitmask: $(run $ct --sparsity 0.5)"
echo "2:4, sparse-24-bitmask: $(run $ct --pattern 2:4)"

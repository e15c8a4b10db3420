#!/bin/sh
# criteria-table.sh: README's table of the gradient and movement criteria
# beside magnitude, wanda and sparsegpt, on both fixtures.
# Usage: tools/criteria-table.sh [SHEARS_BIN] [FINETUNED_DIR]
# FINETUNED_DIR holds llama/ and mlp/, fixtures fine-tuned by
# tools/finetune.py (made there when absent; needs python3-torch): the
# movement rows prune the fine-tuned model against its fixture, beside
# magnitude on the same fine-tuned model.
set -eu
BIN=${1:-build/shears}
FT=${2:-}
F=tests/fixtures
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
if [ -z "$FT" ]; then
    FT=$OUT/ft
    python3 tools/finetune.py --model $F/mlp-fmnist \
        --data $F/mlp-fmnist-data/calibration.safetensors --out $FT/mlp \
        --steps 100 --lr 5e-5 --batch 32 >/dev/null
    python3 tools/finetune.py --model $F/llama-kjv \
        --data $F/llama-kjv-data/calibration.safetensors --out $FT/llama \
        --steps 60 --lr 5e-5 --batch 4 >/dev/null
fi
metric() { # the pruned metric of one job
    rm -rf "$OUT/o"
    "$BIN" prune --out "$OUT/o" --report "$OUT/r.json" --quiet --no-sync \
        "$@" >/dev/null
    jq -r '.metric.pruned * 10000 | round / 10000' "$OUT/r.json"
}
dense() {
    "$BIN" eval --model "$1" --evaluation "$2" --no-speed --json |
        jq -r '.metric.value * 10000 | round / 10000'
}
table() { # fixture, finetuned dir, shapes...
    fx=$1 ft=$2
    shift 2
    C=$F/$fx-data/calibration.safetensors E=$F/$fx-data/evaluation.safetensors
    echo "$fx: dense $(dense $F/$fx $E); fine-tuned $(dense $ft $E)"
    printf '| shape | magnitude | snip | taylor | fisher | wanda | sparsegpt | movement (magnitude) |\n'
    for shape in "$@"; do
        row="| $shape |"
        for m in magnitude snip taylor fisher wanda sparsegpt; do
            row="$row $(metric --model $F/$fx --method $m $shape \
                --calibration $C --evaluation $E) |"
        done
        mv=$(metric --model $ft --method movement --base $F/$fx $shape \
            --evaluation $E)
        mg=$(metric --model $ft --method magnitude $shape --evaluation $E)
        echo "$row $mv ($mg) |"
    done
}
table llama-kjv $FT/llama "--sparsity 0.5" "--pattern 2:4"
table mlp-fmnist $FT/mlp "--sparsity 0.5" "--pattern 2:4" "--sparsity 0.9"

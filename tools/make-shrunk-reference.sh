#!/usr/bin/env bash
# make-shrunk-reference.sh SHEARS_BIN: regenerates
# tests/fixtures/llama-kjv-data/shrunk-reference-logits.safetensors, the
# logits of the fixture Llama shrunk by FLAP (a quarter of its heads and of
# its MLP channels, with the compensation biases), computed by the plain
# PyTorch Hugging Face forward in tools/hf-llama-logits.py (Debian's
# python3-torch). tests/test_structure.c shrinks the fixture the same way
# and compares the engine's logits with these.
set -euo pipefail
bin=$1
fx=tests/fixtures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" prune --model "$fx/llama-kjv" --out "$work/shrunk" --method flap \
  --heads 0.25 --channels 0.25 \
  --calibration "$fx/llama-kjv-data/calibration.safetensors" --quiet --no-sync
python3 tools/hf-llama-logits.py --model "$work/shrunk" \
  --tokens "$fx/llama-kjv-data/reference-logits.safetensors" \
  --out "$fx/llama-kjv-data/shrunk-reference-logits.safetensors"

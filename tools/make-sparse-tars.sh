#!/usr/bin/env bash
# make-sparse-tars.sh: writes the sparse tar fixtures of tests/test_tar.c
# with GNU tar. Each holds config.json and a model.safetensors of 300 MiB
# that is a hole but for 3 bytes (all-hole: no byte at all), stored as a
# sparse member: a few KiB of tar that expand to 300 MiB.
#
#   tools/make-sparse-tars.sh tests/fixtures/tar
set -euo pipefail
out=$(realpath "${1:?usage: make-sparse-tars.sh DIR}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
printf '{}' > config.json
truncate -s 300M model.safetensors
printf 'abc' >> model.safetensors
opts=(--sparse --owner=0 --group=0 --numeric-owner --mtime=@0)
tar "${opts[@]}" --format=gnu -cf "$out/sparse-gnu.tar" config.json model.safetensors
tar "${opts[@]}" --format=pax --pax-option=delete=atime,delete=ctime \
  -cf "$out/sparse-pax.tar" config.json model.safetensors
rm model.safetensors
truncate -s 300M model.safetensors
tar "${opts[@]}" --format=gnu -cf "$out/all-hole.tar" config.json model.safetensors

#!/usr/bin/env bash
# run.sh: what `make run` does after the build.
set -euo pipefail
exec scripts/demo.sh

#!/usr/bin/env bash
# lint.sh: static checks beyond the compiler: the OpenAPI document with a
# real OpenAPI linter (Redocly CLI, installed into tools/ by deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x tools/node_modules/.bin/redocly ]]; then
  echo "lint: tools/node_modules is missing; run scripts/deps.sh" >&2
  exit 1
fi
if ! out=$(tools/node_modules/.bin/redocly lint --format=stylish openapi.yaml 2>&1); then
  echo "$out" | grep -v "Unknown user config" >&2
  echo "lint: openapi.yaml does not pass the OpenAPI lint" >&2
  exit 1
fi

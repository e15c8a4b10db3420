#!/usr/bin/env bash
# lint.sh: static checks beyond the compiler, all offline, with tools that
# deps.sh installs into tools/:
#   - openapi.yaml with a real OpenAPI linter (Redocly CLI);
#   - the Kubernetes manifests against the Kubernetes schemas
#     (tools/validate-k8s.mjs: kubernetes-models, plus kubectl kustomize
#     when kubectl is installed) and the deployment policy;
#   - the Dockerfile (scripts/check_image.sh: dockerfile-utils lint, the
#     runtime libraries of build/shears against deps.sh's runtime list).
# Each prints its full output only when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x tools/node_modules/.bin/redocly ]]; then
  echo "lint: tools/node_modules is missing; run scripts/deps.sh" >&2
  exit 1
fi

status=0
check() { # check NAME COMMAND...: run quietly, show the output on failure
  local name=$1 out
  shift
  if ! out=$("$@" 2>&1); then
    echo "$out" | grep -v "Unknown user config" >&2
    echo "lint: $name failed" >&2
    status=1
  fi
}
check "openapi.yaml (redocly lint)" \
  tools/node_modules/.bin/redocly lint --format=stylish openapi.yaml
check "deploy/k8s (tools/validate-k8s.mjs)" node tools/validate-k8s.mjs
check "Dockerfile (scripts/check_image.sh)" scripts/check_image.sh
exit $status

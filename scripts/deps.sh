#!/usr/bin/env bash
# deps.sh: installs what shears needs to build, test and run on Debian 12.
# The one list of packages: the README, CI (.ci/run) and the Dockerfile all
# call this script. Idempotent; installs only what is missing. Works as root
# or through sudo.
#
#   scripts/deps.sh            build + test dependencies
#   scripts/deps.sh --runtime  only what the shears binary needs at run time
set -euo pipefail

# prometheus: for promtool (the /metrics format check); chromium: the
# dashboard's browser test.
build_pkgs=(
  build-essential pkg-config clang-format
  libmicrohttpd-dev libjansson-dev libuv1-dev libsqlite3-dev
  libopenblas-dev libarchive-dev libssl-dev
  check libcurl4-openssl-dev
  valgrind wrk curl ca-certificates sqlite3 bc
  chromium prometheus
)
runtime_pkgs=(
  libmicrohttpd12 libjansson4 libuv1 libsqlite3-0 libopenblas0-pthread
  libarchive13 libssl3 ca-certificates curl
)

pkgs=("${build_pkgs[@]}")
if [[ "${1:-}" == "--runtime" ]]; then
  pkgs=("${runtime_pkgs[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || {
      echo "deps: need root or sudo to install: ${missing[*]}" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Tools from npm (OpenAPI lint, manifest validation, browser tests) live in
# tools/node_modules; only for the build profile, and only if npm exists.
if [[ "${1:-}" != "--runtime" && -f tools/package.json ]]; then
  if command -v npm >/dev/null; then
    if [[ ! -d tools/node_modules ]] || [[ tools/package.json -nt tools/node_modules ]]; then
      echo "deps: npm install (tools/)" >&2
      (cd tools && npm ci --no-audit --no-fund --loglevel=error) >&2
      touch tools/node_modules
    fi
  else
    echo "deps: npm not found; OpenAPI and manifest checks will be skipped" >&2
  fi
fi

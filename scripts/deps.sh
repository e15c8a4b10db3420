#!/usr/bin/env bash
# deps.sh: installs what shears needs on Debian 12. The one list of
# packages: the README, CI (.ci/run) and the Dockerfile all call this
# script. Idempotent; installs only what is missing. Works as root or
# through sudo.
#
#   scripts/deps.sh            build and test: everything `make test` uses
#   scripts/deps.sh --build    only what compiling build/shears needs
#   scripts/deps.sh --runtime  only what the shears binary needs to run
#   scripts/deps.sh --list-build | --list-runtime   print a list, install nothing
set -euo pipefail

# Compiling the binary.
build_pkgs=(
  build-essential pkg-config
  libmicrohttpd-dev libjansson-dev libuv1-dev libsqlite3-dev
  libopenblas-dev libarchive-dev libssl-dev libpcre2-dev
)
# Building and running the tests and checks: check and libcurl (suites),
# clang-format, valgrind, wrk (bench), sqlite3, bc, curl; chromium (the
# dashboard's browser test) and prometheus (promtool, the /metrics check);
# clang with its runtime libraries (libFuzzer and the sanitizers: make
# fuzz); util-linux's unshare and GNU tar (the disk-full and tar tests).
test_pkgs=(
  check libcurl4-openssl-dev clang-format valgrind wrk sqlite3 bc
  curl ca-certificates chromium prometheus clang libclang-rt-14-dev
  util-linux tar
)
# Running the binary (the container's runtime stage): the shared libraries
# build/shears links, curl for the HEALTHCHECK.
runtime_pkgs=(
  libmicrohttpd12 libjansson4 libuv1 libsqlite3-0 libopenblas0-pthread
  libarchive13 libssl3 libpcre2-8-0 ca-certificates curl
)

profile=${1:-all}
case "$profile" in
  all) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  --build) pkgs=("${build_pkgs[@]}") ;;
  --runtime) pkgs=("${runtime_pkgs[@]}") ;;
  --list-build) printf '%s\n' "${build_pkgs[@]}"; exit 0 ;;
  --list-runtime) printf '%s\n' "${runtime_pkgs[@]}"; exit 0 ;;
  *) echo "usage: deps.sh [--build|--runtime|--list-build|--list-runtime]" >&2; exit 2 ;;
esac

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

# Tools from npm (OpenAPI lint, response and manifest validation, the
# browser test) live in tools/node_modules; only for the full profile.
if [[ "$profile" == all && -f tools/package.json ]]; then
  if ! command -v npm >/dev/null; then
    echo "deps: npm (Node.js >= 20) is needed for the checks in tools/" >&2
    exit 1
  fi
  if [[ ! -d tools/node_modules ]] || [[ tools/package-lock.json -nt tools/node_modules ]]; then
    echo "deps: npm ci (tools/)" >&2
    (cd tools && npm ci --no-audit --no-fund --loglevel=error) >&2
    touch tools/node_modules
  fi
fi

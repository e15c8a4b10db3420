#!/usr/bin/env bash
# bench_service.sh: the HTTP service, measured against yardsticks in the
# same run:
#   - requests/s of GET /v1/jobs/{id} (with and without If-None-Match) as a
#     ratio to GET /healthz, with wrk (16 connections);
#   - upload and download MB/s of the bench checkpoint as ratios to copying
#     the same file with cp.
# Usage: bench_service.sh SHEARS_BIN WORKDIR MODEL_FILE [RUNS]
set -euo pipefail
bin=$1 work=$2 model=$3 runs=${4:-5}
data="$work/serve-data"
rm -rf "$data" "$work/port"
mkdir -p "$data"
"$bin" serve --listen 127.0.0.1:0 --data-dir "$data" --port-file "$work/port" \
  --log-level warn 2>"$work/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do [[ -s "$work/port" ]] && break; sleep 0.05; done
url="http://127.0.0.1:$(cat "$work/port")"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
bytes=$(stat -c %s "$model")

# Upload, download and cp, interleaved.
up=() down=() cp_=()
job=""
for r in $(seq 0 "$runs"); do
  t0=$(now)
  resp=$(curl -s -X POST -H 'Content-Type: application/octet-stream' \
    -H 'Expect:' -T "$model" "$url/v1/checkpoints?name=bench")
  t1=$(now)
  ck=$(grep -o '"id":"ck_[a-z0-9]*"' <<<"$resp" | cut -d'"' -f4)
  if [[ -z "$job" ]]; then
    job=$(curl -s -X POST -H 'Content-Type: application/json' \
      -d "{\"checkpoint\":\"$ck\",\"method\":\"magnitude\"}" "$url/v1/jobs" |
      grep -o '"id":"job_[a-z0-9]*"' | cut -d'"' -f4)
    until curl -s "$url/v1/jobs/$job" | grep -q '"status":"succeeded"'; do sleep 0.2; done
  else
    curl -s -X DELETE "$url/v1/checkpoints/$ck" >/dev/null
  fi
  t2=$(now)
  curl -s -o "$work/download.bin" "$url/v1/jobs/$job/artifact/files/model.safetensors"
  t3=$(now)
  cp --reflink=never "$model" "$work/copy.bin"
  t4=$(now)
  rm -f "$work/download.bin" "$work/copy.bin"
  if ((r > 0)); then # the first round warms up
    up+=("$(echo "$t1 - $t0" | bc -l)")
    down+=("$(echo "$t3 - $t2" | bc -l)")
    cp_+=("$(echo "$t4 - $t3" | bc -l)")
  fi
done
mu=$(printf '%s\n' "${up[@]}" | median)
md=$(printf '%s\n' "${down[@]}" | median)
mc=$(printf '%s\n' "${cp_[@]}" | median)

# Requests per second.
rps() { wrk -t2 -c16 -d"${WRK_SECONDS:-4}"s "$@" 2>/dev/null | awk '/Requests\/sec/ {print $2}'; }
etag=$(curl -s -D - -o /dev/null "$url/v1/jobs/$job" | awk -F': ' 'tolower($1)=="etag" {print $2}' | tr -d '\r')
health=() get=() cond=()
for _ in 1 2 3; do
  health+=("$(rps "$url/healthz")")
  get+=("$(rps "$url/v1/jobs/$job")")
  cond+=("$(rps -H "If-None-Match: $etag" "$url/v1/jobs/$job")")
done
rh=$(printf '%s\n' "${health[@]}" | median)
rg=$(printf '%s\n' "${get[@]}" | median)
rc=$(printf '%s\n' "${cond[@]}" | median)

mb() { echo "$bytes / $1 / 1000000" | bc -l; }
printf '\nservice on the same checkpoint (%s runs, medians)\n' "$runs"
printf '%-34s %12s %16s\n' "" "MB/s" "ratio to cp"
printf '%-34s %12.0f %16.2f\n' "copy (cp, yardstick)" "$(mb "$mc")" 1
printf '%-34s %12.0f %16.2f\n' "upload (POST /v1/checkpoints)" "$(mb "$mu")" "$(echo "$mc / $mu" | bc -l)"
printf '%-34s %12.0f %16.2f\n' "download (GET .../files/{name})" "$(mb "$md")" "$(echo "$mc / $md" | bc -l)"
printf '\n%-34s %12s %16s\n' "wrk -t2 -c16 (3 runs, medians)" "requests/s" "ratio to healthz"
printf '%-34s %12.0f %16.2f\n' "GET /healthz (yardstick)" "$rh" 1
printf '%-34s %12.0f %16.2f\n' "GET /v1/jobs/{id}" "$rg" "$(echo "$rg / $rh" | bc -l)"
printf '%-34s %12.0f %16.2f\n' "GET /v1/jobs/{id}, If-None-Match" "$rc" "$(echo "$rc / $rh" | bc -l)"

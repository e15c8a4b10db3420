#!/usr/bin/env bash
# run.sh: what `make run` does after the build: the service on
# 127.0.0.1:8080 with ./var as its data dir, and a session to paste.
set -euo pipefail
cd "$(dirname "$0")/.."
listen=${SHEARS_LISTEN:-127.0.0.1:8080}
export SHEARS_DATA_DIR=${SHEARS_DATA_DIR:-./var}
url="http://$listen"
cat <<EOT
shears is starting on $url (data in $SHEARS_DATA_DIR; Ctrl-C stops it).
Dashboard: $url/   API description: $url/openapi.yaml

In another terminal:

  # upload the bundled model (a tar of its folder) and note its id
  tar -cf /tmp/kjv.tar -C tests/fixtures/llama-kjv .
  CK=\$(curl -s -X POST -H 'Content-Type: application/x-tar' \\
        --data-binary @/tmp/kjv.tar '$url/v1/checkpoints?name=kjv' \\
        | grep -o '"id":"ck_[a-z0-9]*"' | cut -d'"' -f4)

  # prune it 2:4 by magnitude
  JOB=\$(curl -s -X POST -H 'Content-Type: application/json' \\
        -d "{\"checkpoint\":\"\$CK\",\"method\":\"magnitude\",\"pattern\":\"2:4\"}" \\
        $url/v1/jobs | grep -o '"id":"job_[a-z0-9]*"' | cut -d'"' -f4)

  # wait for it, then download the pruned folder
  until curl -s $url/v1/jobs/\$JOB | grep -q '"status":"succeeded"'; do sleep 1; done
  curl -s $url/v1/jobs/\$JOB/layers?limit=3
  curl -o pruned.tar $url/v1/jobs/\$JOB/artifact && tar -tvf pruned.tar

EOT
exec build/shears serve --listen "$listen"

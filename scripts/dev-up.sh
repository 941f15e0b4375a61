#!/usr/bin/env bash
# Brings up a complete local regindex: PostgreSQL, RabbitMQ, a docker-registry on :5000
# whose notifications go to the api, the api on :8080 (operator endpoints: /stats,
# /metrics on :8081) and the worker; pushes sample
# images (a Flatpak-like app, a plain image, a multi-arch list) and waits until they
# are queryable. State and logs live in .dev/; `make down` stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DEV=.dev
REGISTRY_PORT=${REGISTRY_PORT:-5000}
API_PORT=${API_PORT:-8080}
OPERATOR_PORT=${OPERATOR_PORT:-8081}
export DEV_WEBHOOK_TOKEN=${DEV_WEBHOOK_TOKEN:-dev-token}
mkdir -p "$DEV/registry-data"

ensure_packages
ensure_postgres
ensure_rabbitmq
ensure_database regindex

log "building regindex (release)"
cargo build --release --workspace --bins -q
BIN=${CARGO_TARGET_DIR:-target}/release

start() { # name, command...
    local name=$1; shift
    if [ -f "$DEV/$name.pid" ] && kill -0 "$(cat "$DEV/$name.pid")" 2>/dev/null; then
        log "$name already running (pid $(cat "$DEV/$name.pid"))"
        return
    fi
    nohup "$@" >"$DEV/$name.log" 2>&1 &
    echo $! >"$DEV/$name.pid"
    log "$name started (pid $!, log $DEV/$name.log)"
}

cat >"$DEV/registry.yml" <<YAML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $PWD/$DEV/registry-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
notifications:
  endpoints:
    - name: regindex
      url: http://127.0.0.1:$API_PORT/events
      headers:
        Authorization: [Bearer $DEV_WEBHOOK_TOKEN]
      timeout: 5s
      threshold: 5
      backoff: 2s
YAML

export REGINDEX_CONFIG=$PWD/config.example.yaml
export REGINDEX_REGISTRY__URL=http://127.0.0.1:$REGISTRY_PORT
export REGINDEX_API__LISTEN=127.0.0.1:$API_PORT
export REGINDEX_API__OPERATOR_LISTEN=127.0.0.1:$OPERATOR_PORT
export REGINDEX_API__WEBHOOK_TOKEN=$DEV_WEBHOOK_TOKEN
export REGINDEX_DATABASE__URL=postgres://postgres@127.0.0.1:5432/regindex

"$BIN/regindexctl" migrate
start registry /usr/bin/docker-registry serve "$DEV/registry.yml"
wait_port "$REGISTRY_PORT" docker-registry
start api "$BIN/regindex-api"
start worker "$BIN/regindex-worker"
wait_port "$API_PORT" regindex-api
wait_port "$OPERATOR_PORT" "regindex-api (operator)"

log "pushing sample images"
"$BIN/regindex-seed" --registry "http://127.0.0.1:$REGISTRY_PORT"
log "scanning once, for anything pushed before the api was listening"
"$BIN/regindexctl" scan

QUERY="http://127.0.0.1:$API_PORT/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest"
cat <<MSG

regindex is up.
  Flatpak query:  curl '$QUERY'
  Web page:       http://127.0.0.1:$API_PORT/
  Operator:       http://127.0.0.1:$OPERATOR_PORT/stats/counts  /metrics  /openapi.json
  Registry:       http://127.0.0.1:$REGISTRY_PORT/v2/_catalog
  Push an image:  skopeo copy --dest-tls-verify=false ... docker://127.0.0.1:$REGISTRY_PORT/NAME:TAG
  Logs:           $DEV/*.log        Stop: make down
MSG
# The answer carries the icons as data: URIs (icons.extract is off by default), so show
# one line per image rather than the whole document.
echo "Its answer, one line per image:"
curl -fsS "$QUERY" | python3 -c '
import json, sys
for repo in json.load(sys.stdin)["Results"]:
    images = repo["Images"] + [i for l in repo["Lists"] for i in l["Images"]]
    tags = [t for i in repo["Images"] for t in i.get("Tags", [])] + [t for l in repo["Lists"] for t in l.get("Tags", [])]
    for image in images:
        print("  %-22s %-14s %s" % (repo["Name"], ",".join(sorted(set(tags))), image["Labels"].get("org.flatpak.ref", "")))
'

#!/usr/bin/env bash
# cluster.sh runs a 3-node NATS cluster with JetStream on this machine, and
# serve against it with every stream at 3 replicas (docs/scale-out.md).
#
#   scripts/cluster.sh up              build nats-server and turnstile, start 3 nodes and serve
#   scripts/cluster.sh serve [FLAGS]   start another serve (next ports) against the cluster
#   scripts/cluster.sh kill N          kill -9 node N (0, 1 or 2)
#   scripts/cluster.sh start N         start node N again on its store
#   scripts/cluster.sh leader          time until every stream has a leader again, from now
#   scripts/cluster.sh down            stop every process this script started
#
# Everything lives in CLUSTER_DIR (default ./.cluster): the binaries, each
# node's configuration, store and log, serve's data dirs and logs, and the
# pids. Nodes listen on 127.0.0.1: clients on 4222-4224, routes on
# 6222-6224, monitoring on 8222-8224; the first serve's API on 8080, the
# next on 8081, ...; CLUSTER_PORT_OFFSET (default 0) is added to every
# port. A second serve shares the first one's installation id and
# PostgreSQL (its owner URL), as serves of one installation must.
# Every client needs the token in $CLUSTER_DIR/token (the cluster's own
# auth: one token, all permissions, fine on one machine; see
# docs/operations.md "NATS users and permissions" for users with roles).
# Nodes fsync before every ack (sync_interval: always), as docs/scale-out.md
# recommends with R3.
set -euo pipefail

dir="${CLUSTER_DIR:-./.cluster}"
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
o="${CLUSTER_PORT_OFFSET:-0}"
urls="nats://127.0.0.1:$((4222 + o)),nats://127.0.0.1:$((4223 + o)),nats://127.0.0.1:$((4224 + o))"

token() {
  if [[ ! -s "$dir/token" ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$dir/token")
  fi
  cat "$dir/token"
}

build() {
  (cd "$root" && go build -o "$dir/bin/nats-server" github.com/nats-io/nats-server/v2)
  (cd "$root" && CGO_ENABLED=0 go build -o "$dir/bin/turnstile" ./cmd/turnstile)
}

node_conf() {
  local n="$1" tok
  tok="$(token)"
  mkdir -p "$dir/n$n"
  cat >"$dir/n$n/nats.conf" <<CONF
server_name: n$n
listen: 127.0.0.1:$((4222 + o + n))
http: 127.0.0.1:$((8222 + o + n))
max_payload: 1MB
authorization { token: "$tok" }
jetstream { store_dir: "$dir/n$n/store", sync_interval: always }
cluster {
  name: turnstile
  listen: 127.0.0.1:$((6222 + o + n))
  routes: [ nats-route://127.0.0.1:$((6222 + o)), nats-route://127.0.0.1:$((6223 + o)), nats-route://127.0.0.1:$((6224 + o)) ]
}
CONF
}

start_node() {
  local n="$1"
  node_conf "$n"
  "$dir/bin/nats-server" -c "$dir/n$n/nats.conf" >>"$dir/n$n/log" 2>&1 &
  echo $! >"$dir/n$n/pid"
}

# wait_js waits until every running node says JetStream is healthy.
wait_js() {
  local deadline=$((SECONDS + 60)) n
  for n in 0 1 2; do
    [[ -s "$dir/n$n/pid" ]] || continue
    until curl -sf "http://127.0.0.1:$((8222 + o + n))/healthz?js-enabled-only=true" >/dev/null; do
      ((SECONDS < deadline)) || { echo "node n$n not healthy after 60s; see $dir/n$n/log" >&2; exit 1; }
      sleep 0.2
    done
  done
}

start_serve() {
  local i=0
  while [[ -e "$dir/serve$i" ]]; do i=$((i + 1)); done
  mkdir -p "$dir/serve$i"
  local port=$((8080 + o + i)) shared=()
  if ((i > 0)); then
    shared=(TURNSTILE_INSTALLATION="$(cat "$dir/serve0/installation")" TURNSTILE_DATABASE_URL="$(cat "$dir/serve0/database-owner-url")")
  fi
  echo "serve $i: API on 127.0.0.1:$port, data dir $dir/serve$i, log $dir/serve$i/log"
  env "${shared[@]}" TURNSTILE_NATS_URL="$urls" TURNSTILE_NATS_TOKEN="$(token)" TURNSTILE_REPLICAS=3 \
    TURNSTILE_DATA_DIR="$dir/serve$i" TURNSTILE_HTTP_ADDR="127.0.0.1:$port" \
    "$dir/bin/turnstile" serve "$@" >"$dir/serve$i/log" 2>&1 &
  echo $! >"$dir/serve$i/pid"
  local deadline=$((SECONDS + 120))
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
    kill -0 "$(cat "$dir/serve$i/pid")" 2>/dev/null || { echo "serve $i exited; see $dir/serve$i/log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "serve $i not ready after 120s" >&2; exit 1; }
    sleep 0.2
  done
}

streams_led() {
  TURNSTILE_NATS_URL="$urls" TURNSTILE_NATS_TOKEN="$(token)" "$dir/bin/turnstile" status -o json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(all(s["leader"] for s in r["streams"]))' 2>/dev/null || echo False
}

case "${1:-}" in
up)
  build
  for n in 0 1 2; do start_node "$n"; done
  wait_js
  shift
  start_serve "$@"
  echo "cluster: $urls (token in $dir/token)"
  echo "try: TURNSTILE_NATS_URL=$urls TURNSTILE_NATS_TOKEN=\$(cat $dir/token) $dir/bin/turnstile status"
  ;;
serve) shift; start_serve "$@" ;;
kill)
  n="${2:?node 0, 1 or 2}"
  kill -9 "$(cat "$dir/n$n/pid")" && rm -f "$dir/n$n/pid"
  echo "killed n$n (kill -9)"
  ;;
start) n="${2:?node 0, 1 or 2}"; start_node "$n"; wait_js; echo "n$n is back" ;;
leader)
  begin=$(date +%s.%N)
  until [[ "$(streams_led)" == True ]]; do sleep 0.05; done
  echo "every stream has a leader, $(python3 -c "print(round($(date +%s.%N)-$begin,2))") s after the call"
  ;;
down)
  for p in "$dir"/serve*/pid; do [[ -e "$p" ]] && kill "$(cat "$p")" 2>/dev/null; rm -f "$p"; done
  sleep 1
  for n in 0 1 2; do [[ -s "$dir/n$n/pid" ]] && kill "$(cat "$dir/n$n/pid")" 2>/dev/null; rm -f "$dir/n$n/pid"; done
  echo "stopped; remove $dir to start afresh"
  ;;
*) sed -n '2,20p' "$0"; exit 2 ;;
esac

#!/usr/bin/env bash
# cluster.sh runs a 3-node NATS cluster with JetStream on this machine, and
# serves against it with every stream at 3 replicas (docs/scale-out.md).
#
#   scripts/cluster.sh up [FLAGS]      build nats-server and turnstile, start 3 nodes and
#                                      SERVES serves (default 1; SERVES=3 for three)
#   scripts/cluster.sh serve [FLAGS]   start another serve (next ports) against the cluster
#   scripts/cluster.sh kill N          kill -9 node N (0, 1 or 2)
#   scripts/cluster.sh start N         start node N again on its store
#   scripts/cluster.sh kill-serve I    kill -9 serve I (not 0 unless FORCE=1: it runs the PostgreSQL)
#   scripts/cluster.sh start-serve I   start serve I again on its data dir, port and flags
#   scripts/cluster.sh ps              which nodes and serves run
#   scripts/cluster.sh leader          time until every stream has a leader again, from now
#   scripts/cluster.sh down            stop every process this script started
#
# Everything lives in CLUSTER_DIR (default ./.cluster): the binaries, each
# node's configuration, store and log, serve's data dirs and logs, and the
# pids. Nodes listen on 127.0.0.1: clients on 4222-4224, routes on
# 6222-6224, monitoring on 8222-8224; the first serve's API on 8080, the
# next on 8081, ...; CLUSTER_PORT_OFFSET (default 0) is added to every
# port. A second serve shares the first one's installation id and
# PostgreSQL (its owner URL), as serves of one installation must; that
# PostgreSQL is serve 0's local one, so it stops when serve 0 does. Flags
# given to up or serve are kept in the serve's data dir and used again by
# start-serve.
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

running() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start_serve I [FLAGS] starts serve I (API on 8080+I) with FLAGS, or with
# the flags it was started with before when none are given.
start_serve() {
  local i="$1"
  shift
  mkdir -p "$dir/serve$i"
  if running "$dir/serve$i/pid"; then echo "serve $i runs already" >&2; return; fi
  if (($# > 0)) || [[ ! -e "$dir/serve$i/args" ]]; then printf '%s\0' "$@" >"$dir/serve$i/args"; fi
  local port=$((8080 + o + i)) shared=() args=()
  mapfile -d '' args <"$dir/serve$i/args"
  if ((i > 0)); then
    shared=(TURNSTILE_INSTALLATION="$(cat "$dir/serve0/installation")")
    # serve 0's local PostgreSQL; with --database-url every serve has its own flag.
    if [[ -s "$dir/serve0/database-owner-url" ]]; then shared+=(TURNSTILE_DATABASE_URL="$(cat "$dir/serve0/database-owner-url")"); fi
  fi
  echo "serve $i: API on 127.0.0.1:$port, data dir $dir/serve$i, log $dir/serve$i/log"
  env "${shared[@]}" TURNSTILE_NATS_URL="$urls" TURNSTILE_NATS_TOKEN="$(token)" TURNSTILE_REPLICAS=3 \
    TURNSTILE_DATA_DIR="$dir/serve$i" TURNSTILE_HTTP_ADDR="127.0.0.1:$port" \
    "$dir/bin/turnstile" serve "${args[@]}" >>"$dir/serve$i/log" 2>&1 &
  echo $! >"$dir/serve$i/pid"
  local deadline=$((SECONDS + 120))
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
    running "$dir/serve$i/pid" || { echo "serve $i exited; see $dir/serve$i/log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "serve $i not ready after 120s" >&2; exit 1; }
    sleep 0.2
  done
}

next_serve() {
  local i=0
  while [[ -e "$dir/serve$i" ]]; do i=$((i + 1)); done
  echo "$i"
}

# stop_pid FILE ends the process (SIGTERM) and waits up to a minute for it.
stop_pid() {
  running "$1" || { rm -f "$1"; return 0; }
  local pid deadline=$((SECONDS + 60))
  pid="$(cat "$1")"
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { kill -9 "$pid" 2>/dev/null || true; break; }
    sleep 0.1
  done
  rm -f "$1"
}

# streams_led prints True when every stream the running nodes hold has a
# leader, as their monitoring ports say (each lists the streams it leads):
# no client request, so no wait on a leaderless stream's timeout.
streams_led() {
  python3 - "$o" <<'PY'
import json, sys, urllib.request
o = int(sys.argv[1])
held, led = set(), set()
for n in range(3):
    for query, into in (("", held), ("&stream-leader-only=true", led)):
        url = f"http://127.0.0.1:{8222 + o + n}/jsz?accounts=true&streams=true{query}"
        try:
            r = json.load(urllib.request.urlopen(url, timeout=1))
        except Exception:
            continue
        for a in r.get("account_details") or []:
            into.update(s["name"] for s in a.get("stream_detail") or [])
print(bool(held) and held <= led)
PY
}

case "${1:-}" in
up)
  build
  for n in 0 1 2; do running "$dir/n$n/pid" || start_node "$n"; done
  wait_js
  shift
  for ((i = 0; i < ${SERVES:-1}; i++)); do start_serve "$i" "$@"; done
  echo "cluster: $urls (token in $dir/token)"
  echo "try: TURNSTILE_NATS_URL=$urls TURNSTILE_NATS_TOKEN=\$(cat $dir/token) $dir/bin/turnstile status"
  ;;
serve) shift; start_serve "$(next_serve)" "$@" ;;
kill)
  n="${2:?node 0, 1 or 2}"
  kill -9 "$(cat "$dir/n$n/pid")" && rm -f "$dir/n$n/pid"
  echo "killed n$n (kill -9)"
  ;;
start) n="${2:?node 0, 1 or 2}"; start_node "$n"; wait_js; echo "n$n is back" ;;
kill-serve)
  i="${2:?serve number}"
  if ((i == 0)) && [[ "${FORCE:-}" != 1 ]]; then
    echo "serve 0 runs the PostgreSQL every serve uses: killing it stops that too; kill serve 1 or 2, or set FORCE=1" >&2
    exit 1
  fi
  running "$dir/serve$i/pid" || { echo "serve $i does not run" >&2; exit 1; }
  kill -9 "$(cat "$dir/serve$i/pid")" && rm -f "$dir/serve$i/pid"
  echo "killed serve $i (kill -9)"
  ;;
start-serve) start_serve "${2:?serve number}" ;;
ps)
  for n in 0 1 2; do
    if running "$dir/n$n/pid"; then echo "n$n      runs (pid $(cat "$dir/n$n/pid")), client port $((4222 + o + n))"; else echo "n$n      down"; fi
  done
  for d in "$dir"/serve*/; do
    [[ -d "$d" ]] || continue
    i="${d%/}"; i="${i##*/serve}"
    if running "$d/pid"; then echo "serve $i runs (pid $(cat "$d/pid")), API on 127.0.0.1:$((8080 + o + i))"; else echo "serve $i down"; fi
  done
  ;;
leader)
  begin=$(date +%s.%N)
  until [[ "$(streams_led)" == True ]]; do sleep 0.05; done
  echo "every stream has a leader, $(python3 -c "print(round($(date +%s.%N)-$begin,2))") s after the call"
  ;;
down)
  # The last serve first: serve 0 runs the PostgreSQL the others use.
  i="$(next_serve)"
  while ((i-- > 0)); do stop_pid "$dir/serve$i/pid"; done
  for n in 0 1 2; do stop_pid "$dir/n$n/pid"; done
  echo "stopped; remove $dir to start afresh"
  ;;
*) sed -n '2,30p' "$0"; exit 2 ;;
esac

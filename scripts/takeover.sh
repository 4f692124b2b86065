#!/usr/bin/env bash
# takeover.sh: measure how long a serve's command partitions take to move to
# another serve when it is killed (kill -9) or stopped (SIGTERM).
#
# Starts one nats-server (built from the module) and two serves with the sim
# provisioner in a temporary directory, then, TRIALS times each: kills the
# second serve, times one `turnstile create` of a workspace in one of its
# partitions, reads the survivor's "engine: partitions" log line, and starts
# the second serve again. Prints one line per trial; cleans up on exit.
#
#   scripts/takeover.sh            # 5 kills, 3 stops
#   TRIALS=10 scripts/takeover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${TRIALS:-5}
dir=$(mktemp -d)
chmod o+x "$dir" # serve runs its PostgreSQL as the postgres user
trap 'pkill -f "data-dir $dir/" || true; pkill -f "$dir/nats-server" || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
go build -o "$dir/turnstile" ./cmd/turnstile
go build -o "$dir/nats-server" github.com/nats-io/nats-server/v2
port=$(( 20000 + RANDOM % 20000 ))
nats=nats://127.0.0.1:$port
"$dir/nats-server" -js -sd "$dir/ns" -p "$port" >"$dir/ns.log" 2>&1 &
for _ in $(seq 1 100); do grep -q "Server is ready" "$dir/ns.log" && break; sleep 0.1; done
serve() { # name http-port; in a subshell, so the shell does not report its kill
	("$dir/turnstile" serve --data-dir "$dir/$1" --nats-url "$nats" --provisioner sim \
		--http-addr "127.0.0.1:$2" --log-format json >>"$dir/$1.log" 2>&1 &)
}
started() { grep -c '"engine started"' "$dir/$1.log" 2>/dev/null || true; }
wait_started() { # name count
	for _ in $(seq 1 1200); do [ "$(started "$1")" -ge "$2" ] && return 0; sleep 0.1; done
	echo "serve $1 did not start; see $dir/$1.log" >&2; exit 1
}
create() { "$dir/turnstile" create "$1" --nats-url "$nats" --database-url "$(cat "$dir/a/database-url")" >/dev/null; }
partition() { python3 -c 'import sys
h=0x811c9dc5
for c in sys.argv[1].encode(): h=((h^c)*0x01000193)&0xffffffff
print(h%int(sys.argv[2]))' "$1" "$2"; }
lastline() { grep "\"$2\"" "$dir/$1.log" | tail -1; }
field() { python3 -c 'import sys,json; d=json.loads(sys.stdin.read()); print(" ".join(map(str, d[sys.argv[1]])) if isinstance(d[sys.argv[1]], list) else d[sys.argv[1]])' "$1"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2-$1:.2f}')"; }

serve a 0; wait_started a 1
serve b 0; wait_started b 1
sleep 2
n=1
for t in $(seq 1 "$TRIALS") stop1 stop2 stop3; do
	parts=$(lastline b "engine started" | field partitions)
	mine=" $(lastline b "engine started" | field pulls) "
	while :; do ws=t$RANDOM$RANDOM; case "$mine" in *" $(partition "$ws" "$parts") "*) break ;; esac; done
	pid=$(pgrep -f "data-dir $dir/b") t0=$(now)
	case $t in
	stop*) kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; what="SIGTERM (exited after $(secs "$t0" "$(now)") s)" ;;
	*) kill -9 "$pid"; what="kill -9" ;;
	esac
	create "$ws"; t1=$(now)
	took=$(lastline a "engine: partitions" | field time)
	echo "$what: a command of its partitions decided $(secs "$t0" "$t1") s after; the survivor took them at $took (fault at $(date -u -d "@$t0" +%T.%N))"
	serve b 0; n=$((n + 1)); wait_started b "$n"
	t2=$(now); create "j$RANDOM$RANDOM"; echo "  rejoined: a command right after took $(secs "$t2" "$(now)") s"
	sleep 3
done

#!/usr/bin/env bash
# fuzz.sh runs every fuzz target of the module, one after the other, each
# for the same duration, and prints a line per target: package, target,
# wall time, executions, new interesting inputs, and PASS or FAIL.
#
#   scripts/fuzz.sh [DURATION] [TARGET-REGEXP]
#
# DURATION is go test's -fuzztime (default 10m; "30s", "1h", or "500x" for a
# count). TARGET-REGEXP, optional, keeps only the targets whose name it
# matches (grep -E). FUZZ_PARALLEL sets the number of fuzz workers (go
# test's -parallel; default GOMAXPROCS).
#
# New interesting inputs go to the Go build cache ($(go env GOCACHE)/fuzz),
# not the source tree; an input that fails is written to the package's
# testdata/fuzz/<Target>/ by go test itself, and then runs with every
# ordinary 'go test' until it is fixed. Exits 1 if any target failed.
#
# Go 1.26's fuzz coordinator can end a duration-bound run with a bare
# "context deadline exceeded" and no failing input (go.dev/issue/75804,
# fixed in Go 1.27): such a run is reported as FLAKE and does not fail the
# script. A target whose setup outlasts DURATION ends during its seed
# baseline with 0 executions: give it more time.
set -euo pipefail

duration="${1:-10m}"
filter="${2:-}"
cd "$(dirname "$0")/.."

parallel=()
if [[ -n "${FUZZ_PARALLEL:-}" ]]; then
	parallel=(-parallel "$FUZZ_PARALLEL")
fi

logs="$(mktemp -d "${TMPDIR:-/tmp}/turnstile-fuzz.XXXXXX")"
trap 'rm -rf "$logs"' EXIT

# Packages with a fuzz target in a test file; go test -list then names the
# targets as the compiler sees them (build tags and all). Listing only these
# packages keeps heavy TestMains (e2e builds the binary) out of it.
candidates=()
while read -r dir pkg; do
	if grep -lqs '^func Fuzz' "$dir"/*_test.go; then
		candidates+=("$pkg")
	fi
done < <(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}} {{.ImportPath}}{{end}}' ./...)

targets=() # "package target"
for pkg in "${candidates[@]}"; do
	out="$(go test -list '^Fuzz' "$pkg")" || {
		printf '%s\n' "$out" >&2
		echo "fuzz.sh: listing the fuzz targets of $pkg failed" >&2
		exit 1
	}
	while read -r name; do
		if [[ "$name" == Fuzz* ]] && { [[ -z "$filter" ]] || grep -Eq -- "$filter" <<<"$name"; }; then
			targets+=("$pkg $name")
		fi
	done <<<"$out"
done
if [[ ${#targets[@]} -eq 0 ]]; then
	echo "fuzz.sh: no fuzz targets${filter:+ match $filter}" >&2
	exit 1
fi

echo "fuzz.sh: ${#targets[@]} target(s), $duration each"
module="$(go list -m)"
row() { printf '%-28s %-22s %9s %12s %9s  %s\n' "$@"; }
summary="$(row PACKAGE TARGET WALL EXECS NEW RESULT)"$'\n'
failed=0
flaked=0
for entry in "${targets[@]}"; do
	read -r pkg name <<<"$entry"
	short="${pkg#"$module"/}"
	log="$logs/${short//\//_}.$name.log"
	echo "--- $short $name"
	start=$SECONDS
	status=PASS
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$duration" "${parallel[@]}" "$pkg" >"$log" 2>&1; then
		status=FAIL
		# go.dev/issue/75804: the deadline itself reported as the failure.
		if ! grep -q 'Failing input written to' "$log" &&
			[[ "$(grep -vE '^(fuzz: |--- FAIL: |FAIL|exit status |ok )' "$log" | sed 's/^[[:space:]]*//' | grep -v '^$' || true)" == "context deadline exceeded" ]]; then
			status=FLAKE
			flaked=$((flaked + 1))
		else
			failed=1
		fi
	fi
	wall="$((SECONDS - start))s"
	# The last progress line: "fuzz: elapsed: 30s, execs: 123 (4/sec), new interesting: 5 (total: 60)";
	# none if the run ended during the seed baseline.
	last="$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -n 1 || true)"
	execs="$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")"
	new="$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")"
	note=""
	if [[ -z "$last" && $status != FAIL ]]; then
		note=" (ended in the seed baseline)"
	fi
	line="$(row "$short" "$name" "$wall" "${execs:-0}" "${new:-0}" "$status$note")"
	echo "$line"
	summary+="$line"$'\n'
	if [[ $status == FAIL ]]; then
		# What failed, and where go test put the input.
		grep -vE '^fuzz: elapsed: ' "$log" | tail -n 40 | sed 's/^/    /'
	fi
done

echo
echo "fuzz.sh: summary ($duration per target; $flaked flake(s) of go.dev/issue/75804)"
printf '%s' "$summary"
exit "$failed"

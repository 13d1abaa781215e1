#!/usr/bin/env bash
# Instructions Redis spends per job in the e2e flow (claim and complete, not submission),
# counted by callgrind: unlike seconds, the count repeats to within ~1% on a noisy machine, so
# it can judge a change to the Lua library. Needs valgrind and a release build of drover-bench.
#   benches/callgrind-e2e.sh [JOBS] [AGENTS] [SLOTS]      (default 10000 4 16)
# REDIS_SERVER names another redis-server binary (say, one built with symbols, to read the
# profile that callgrind_annotate makes of it).
# E2E_ARGS adds flags to `drover-bench e2e` (E2E_ARGS=--no-journal: the journal's cost).
# Prints the e2e report, then instructions per job and per claim round trip.
set -euo pipefail
jobs=${1:-10000}
agents=${2:-4}
slots=${3:-16}
root=$(cd "$(dirname "$0")/.." && pwd)
bench="$root/target/release/drover-bench"
[ -x "$bench" ] || { echo "build it first: cargo build --release -p drover-bench" >&2; exit 2; }
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/out" \
  "${REDIS_SERVER:-redis-server}" --port "$port" --save '' --appendonly no >"$work/valgrind.log" 2>&1 &
server=$!
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.3; done
"$bench" e2e --redis "redis://127.0.0.1:$port" --jobs "$jobs" --agents "$agents" \
  --slots "$slots" --poll-ms 500 --json ${E2E_ARGS:-} \
  --before-run "callgrind_control -i on $server >/dev/null 2>&1" | tail -1 | tee "$work/report.json"
callgrind_control -i off "$server" >/dev/null 2>&1
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$server" || true
total=$(callgrind_annotate "$work/out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
rounds=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['claim_round_trips'])" "$work/report.json")
echo "instructions per job: $((total / jobs)); claim round trips: $rounds ($((jobs / rounds)) jobs each)"

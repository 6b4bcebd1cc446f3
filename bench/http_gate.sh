#!/usr/bin/env bash
# bench/http_gate.sh [SECONDS] [CONNECTIONS]: a trivial Lua route on one gate process
# against bench/http_floor.c (the same bytes from plain C), both under wrk on loopback.
# Prints req/s of each, the ratio, and the gate's CPU microseconds per request (from
# /proc/PID/stat). Needs a built tree (make build) and wrk (apt-get install wrk).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
SECS=${1:-10}
CONNS=${2:-50}
command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
. "$ROOT/tools/services.sh"
TMP=$(mktemp -d /tmp/chathost-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

cc -O2 -o "$TMP/http_floor" "$ROOT/bench/http_floor.c" -luv -lhttp_parser
mkdir -p "$TMP/scripts/gate"
cat >"$TMP/scripts/gate/init.lua" <<'LUA'
return { routes = { ["GET /hello"] = function() return { error = 0, msg = "hello" } end } }
LUA
GATE_PORT=$(free_port $((22000 + RANDOM % 1000)))
FLOOR_PORT=$(free_port $((GATE_PORT + 1)))
cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$TMP/scripts", watch = false },
  gate = { host = "127.0.0.1", port = $GATE_PORT, admin_port = 0, access_log = false },
}
CFG

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_wrk() { wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$1/hello" | awk '/Requests\/sec/ {print $2}'; }

"$TMP/http_floor" "$FLOOR_PORT" & FLOOR_PID=$!; PIDS+=($FLOOR_PID)
"$BIN" gate -c "$TMP/config.lua" & GATE_PID=$!; PIDS+=($GATE_PID)
sleep 0.5
curl -sf "http://127.0.0.1:$GATE_PORT/hello" >/dev/null || { echo "gate did not answer" >&2; exit 1; }
wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$GATE_PORT/hello" >/dev/null # warm-up (JIT)

F0=$(ticks "$FLOOR_PID")
FLOOR=$(run_wrk "$FLOOR_PORT")
F1=$(ticks "$FLOOR_PID")
T0=$(ticks "$GATE_PID")
GATE=$(run_wrk "$GATE_PORT")
T1=$(ticks "$GATE_PID")
HZ=$(getconf CLK_TCK)
awk -v f="$FLOOR" -v g="$GATE" -v t=$((T1 - T0)) -v ft=$((F1 - F0)) -v hz="$HZ" -v s="$SECS" 'BEGIN {
  printf "floor (C libuv + http_parser): %.0f req/s, %.1f us CPU per request\n", f, ft / hz * 1e6 / (f * s)
  printf "gate (Lua route):              %.0f req/s, %.1f us CPU per request\n", g, t / hz * 1e6 / (g * s)
  printf "ratio gate/floor (req/s):      %.2f\n", g / f
}'

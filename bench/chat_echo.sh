#!/usr/bin/env bash
# bench/chat_echo.sh [SECONDS] [CONNS] [WINDOW]: host overhead of the chat role. The same
# load (bench/chat_load.c echo mode: CONNS connections keeping WINDOW frames in flight)
# against bench/echo_floor.c (C, framing only) and against a chat process whose Lua handler
# returns the decoded message (so the reply is JSON-encoded again), over TCP frames and over
# WebSocket (docs/protocol.md §5.5: the same handler, frames as masked text messages
# {"id":..,"body":..}). Prints frames/s, the ratios, and each server's CPU microseconds per frame.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
SECS=${1:-10}
CONNS=${2:-50}
WINDOW=${3:-16}
. "$ROOT/tools/services.sh"
# The roles check every gRPC call against this shared secret, as production runs them (make
# run generates one); the base commit of a comparison ignores it.
export CHATHOST_GRPC_SECRET=${CHATHOST_GRPC_SECRET:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
TMP=$(mktemp -d /tmp/chathost-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; redis_stop "$TMP/redis" || true; rm -rf "$TMP"; }
trap cleanup EXIT

cc -O2 -o "$TMP/echo_floor" "$ROOT/bench/echo_floor.c" -luv
cc -O2 -o "$TMP/chat_load" "$ROOT/bench/chat_load.c" -luv
mkdir -p "$TMP/scripts/chat"
cat >"$TMP/scripts/chat/init.lua" <<'LUA'
return { messages = { [1] = function(session, msg) return msg end } }
LUA
REDIS_PORT=$(free_port $((27000 + RANDOM % 1000)))
redis_start "$TMP/redis" "$REDIS_PORT" # the chat role's admin checks expect one
FLOOR_PORT=$(free_port $((23000 + RANDOM % 1000)))
CHAT_PORT=$(free_port $((FLOOR_PORT + 1)))
RPC_PORT=$(free_port $((CHAT_PORT + 1)))
WS_PORT=$(free_port $((RPC_PORT + 1)))
cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$TMP/scripts", watch = false },
  redis = { port = $REDIS_PORT },
  -- echo connections never log in: the login deadline (10 s by default, a run's length) at its most
  chat = { ws_origins = { "*" }, login_timeout_ms = 600000,
    instances = { bench = { port = $CHAT_PORT, rpc_port = $RPC_PORT, admin_port = 0, ws_port = $WS_PORT } } },
}
CFG
"$TMP/echo_floor" "$FLOOR_PORT" & FLOOR_PID=$!; PIDS+=($FLOOR_PID)
"$BIN" chat --name bench -c "$TMP/config.lua" & CHAT_PID=$!; PIDS+=($CHAT_PID)
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
"$TMP/chat_load" echo - "127.0.0.1:$CHAT_PORT" --conns "$CONNS" --window "$WINDOW" --seconds 2 >/dev/null # warm-up
"$TMP/chat_load" echo - "127.0.0.1:$WS_PORT" --ws --conns "$CONNS" --window "$WINDOW" --seconds 2 >/dev/null
run() { "$TMP/chat_load" echo - "127.0.0.1:$1" "${@:2}" --conns "$CONNS" --window "$WINDOW" --seconds "$SECS" | awk '{print $6}'; }
F0=$(ticks "$FLOOR_PID"); FLOOR=$(run "$FLOOR_PORT"); F1=$(ticks "$FLOOR_PID")
C0=$(ticks "$CHAT_PID"); CHAT=$(run "$CHAT_PORT"); C1=$(ticks "$CHAT_PID")
W0=$(ticks "$CHAT_PID"); WS=$(run "$WS_PORT" --ws); W1=$(ticks "$CHAT_PID")
awk -v f="$FLOOR" -v c="$CHAT" -v w="$WS" -v ft=$((F1 - F0)) -v ct=$((C1 - C0)) -v wt=$((W1 - W0)) \
    -v hz="$HZ" -v s="$SECS" 'BEGIN {
  printf "floor (C, framing only):   %.0f frames/s, %.2f us CPU per frame\n", f, ft / hz * 1e6 / (f * s)
  printf "chat role (Lua echo):      %.0f frames/s, %.2f us CPU per frame\n", c, ct / hz * 1e6 / (c * s)
  printf "chat role over WebSocket:  %.0f frames/s, %.2f us CPU per frame\n", w, wt / hz * 1e6 / (w * s)
  printf "ratio chat/floor:          %.2f\n", c / f
  printf "ratio WebSocket/TCP:       %.2f\n", w / c
}'

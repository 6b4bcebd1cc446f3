#!/usr/bin/env bash
# bench/chat_idle.sh [USERS] [SECONDS]: logged-in idle connections held by one chat server,
# and its RSS. USERS is capped by the file-descriptor limit this shell may raise to (the
# chat server needs one per connection): on a machine that allows it, pass 100000. The
# load generator binds several 127.0.0.x source addresses so ports do not run out.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
LIMIT=$(( $(ulimit -n) - 200 ))
USERS=${1:-100000}
if [ "$USERS" -gt "$LIMIT" ]; then
  echo "bench: this shell may open $(ulimit -n) files: measuring $LIMIT connections, not $USERS" >&2
  USERS=$LIMIT
fi
PAIRS=$((USERS / 2))
SECS=${2:-20}
. "$ROOT/bench/stores.sh"
P1=$(free_port $((21000 + RANDOM % 1000))); R1=$(free_port $((P1 + 1)))
cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$ROOT/scripts", watch = false },
  migrations = { dir = "$ROOT/sql" },
  redis = { port = $REDIS_PORT, pool_size = 4 },
  mysql = { port = $MYSQL_PORT, password = "benchpw", database = "chathost_bench", pool_size = 8 },
  chat = { heartbeat_timeout_ms = 120000, instances = { b1 = { port = $P1, rpc_port = $R1, admin_port = 0 } } },
}
CFG
export CHATHOST_CONFIG=$TMP/config.lua
"$BIN" migrate >/dev/null
"$BIN" exec "$ROOT/bench/chat_setup.lua" "$PAIRS" "$TMP/users" 1
"$BIN" chat --name b1 & C1=$!; PIDS+=($C1)
sleep 1
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
R0=$(rss "$C1")
SOURCES=$(seq -s, -f "127.0.0.%g" 2 9)
"$TMP/chat_load" idle "$TMP/users" "127.0.0.1:$P1" --sources "$SOURCES" --seconds "$SECS" &
LOAD=$!; PIDS+=($LOAD)
sleep $((SECS - 2))
R1=$(rss "$C1")
N=$(ls "/proc/$C1/fd" | wc -l)
wait "$LOAD" || true
awk -v r0="$R0" -v r1="$R1" -v n="$N" -v u="$USERS" 'BEGIN {
  printf "chat server: %d descriptors open (%d users asked), RSS %.1f MB idle before, %.1f MB with them\n", n, u, r0 / 1024, r1 / 1024
  printf "per connection: %.2f KB (RSS growth / connections)\n", (r1 - r0) / n
  printf "projected for 100,000 connections: %.0f MB\n", (r0 + (r1 - r0) / n * 100000) / 1024
}'

#!/usr/bin/env bash
# bench/sentinel_failover.sh [RUNS]: the time from kill -9 of the Redis master to the first
# successful login after it (issue 16; target < 10 s). A gate, a status role and one chat
# server run on Redis through tools/sentinel.sh's master, replica and three sentinels
# (down-after-milliseconds 1000) and a private MariaDB. A login is the whole path a client
# takes: POST /user_login at the gate (argon2id, status issues the chat token), then 1005
# at the chat server it names. Each run: logins succeed, kill -9 the current master, log in
# every 50 ms (each attempt bounded) until one succeeds; then the killed node is started
# again as the new master's replica and the next run waits until the sentinels see it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
RUNS=${1:-3}
PASSWORD='Bench123!'
. "$ROOT/tools/services.sh"
export CHATHOST_GRPC_SECRET=${CHATHOST_GRPC_SECRET:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
TMP=$(mktemp -d /tmp/chathost-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  "$ROOT/tools/sentinel.sh" stop "$TMP/sentinel" || true
  mariadb_stop "$TMP/mysql" || true
  rm -rf "$TMP"
}
trap cleanup EXIT

BASE=$((20000 + 5 * (RANDOM % 2000)))
MYSQL_PORT=$(free_port $((24000 + RANDOM % 1000)))
GATE_PORT=$(free_port $((30000 + RANDOM % 500)))
STATUS_PORT=$(free_port $((GATE_PORT + 1)))
CHAT_PORT=$(free_port $((STATUS_PORT + 1)))
RPC_PORT=$(free_port $((CHAT_PORT + 1)))
"$ROOT/tools/sentinel.sh" start "$TMP/sentinel" "$BASE" >/dev/null
mariadb_start "$TMP/mysql" "$MYSQL_PORT"
mariadb_setup "$TMP/mysql" chathost_bench chathost benchpw
cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$ROOT/scripts", watch = false },
  migrations = { dir = "$ROOT/sql" },
  redis = { master_name = "chathost",
            sentinels = { "127.0.0.1:$((BASE + 2))", "127.0.0.1:$((BASE + 3))", "127.0.0.1:$((BASE + 4))" } },
  mysql = { port = $MYSQL_PORT, password = "benchpw", database = "chathost_bench" },
  gate = { port = $GATE_PORT, admin_port = 0, access_log = false },
  status = { port = $STATUS_PORT, admin_port = 0 },
  verify = { admin_port = 0 },
  chat = { instances = { b1 = { port = $CHAT_PORT, rpc_port = $RPC_PORT, admin_port = 0 } } },
}
CFG
export CHATHOST_CONFIG=$TMP/config.lua
"$BIN" migrate >/dev/null
mapfile -t SETUP < <("$BIN" exec "$ROOT/bench/login_setup.lua" 1 "$PASSWORD")
# the roles' warnings while Redis is away (one per failed request) go to a file
"$BIN" status 2>>"$TMP/roles.log" & PIDS+=($!)
"$BIN" gate 2>>"$TMP/roles.log" & PIDS+=($!)
"$BIN" chat --name b1 2>>"$TMP/roles.log" & PIDS+=($!)
for p in "$GATE_PORT" "$STATUS_PORT" "$CHAT_PORT"; do
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
done
"$BIN" exec "$ROOT/bench/failover_login.lua" "http://127.0.0.1:$GATE_PORT" bench1@example.com \
  "${SETUP[0]}" "$ROOT/tools/sentinel.sh" "$TMP/sentinel" "$BASE" "$RUNS" 2>>"$TMP/roles.log"
grep -h "moved from" "$TMP/roles.log" | sed 's/^[^ ]* [A-Z]* *//' | sort | uniq -c

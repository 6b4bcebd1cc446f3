#!/usr/bin/env bash
# bench/grpc_status.sh [CALLS] [IN_FLIGHT] [SERVERS]: GetChatServer against one status
# process with a private Redis and SERVERS (default 2) live chat servers announced in it
# (liveness keys and loads only: probes are off, nothing listens on their ports). Calls
# carry the cluster's gRPC secret, as between roles. Prints what grpc_load.lua measures.
# Needs a built tree (make build).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
. "$ROOT/tools/services.sh"
# The roles check every gRPC call against this shared secret, as production runs them (make
# run generates one); the base commit of a comparison ignores it.
export CHATHOST_GRPC_SECRET=${CHATHOST_GRPC_SECRET:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
TMP=$(mktemp -d /tmp/chathost-bench.XXXXXX)
STATUS_PID=
cleanup() {
  [ -n "$STATUS_PID" ] && kill "$STATUS_PID" 2>/dev/null || true
  redis_stop "$TMP/redis" || true
  rm -rf "$TMP"
}
trap cleanup EXIT

REDIS_PORT=$(free_port $((27000 + RANDOM % 1000)))
STATUS_PORT=$(free_port $((21000 + RANDOM % 1000)))
redis_start "$TMP/redis" "$REDIS_PORT"
CHATHOST_GRPC_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CHATHOST_GRPC_SECRET
cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$ROOT/scripts", watch = false },
  redis = { port = $REDIS_PORT },
  status = { port = $STATUS_PORT, admin_port = 0, probe_interval_ms = 0 },
  chat = { instances = { chat1 = { host = "127.0.0.1", port = 8090, rpc_port = 50055 },
                        chat2 = { host = "127.0.0.1", port = 8091, rpc_port = 50056 } } },
}
CFG
for i in $(seq 1 "${3:-2}"); do
  redis-cli -p "$REDIS_PORT" set "chatserver_chat$i" "{\"host\":\"127.0.0.1\",\"port\":$((8089 + i)),\"rpc\":\"127.0.0.1:$((50054 + i))\"}" >/dev/null
  redis-cli -p "$REDIS_PORT" sadd chatservers "chat$i" >/dev/null
  redis-cli -p "$REDIS_PORT" hset logincount "chat$i" $((10 + i)) >/dev/null
done
${STATUS_WRAPPER:-} "$BIN" status -c "$TMP/config.lua" &
STATUS_PID=$!
# up to 30 s: a loaded machine, or a STATUS_WRAPPER such as valgrind, starts it slowly
for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$STATUS_PORT") 2>/dev/null && break; sleep 0.05; done
"$BIN" exec "$ROOT/bench/grpc_load.lua" "127.0.0.1:$STATUS_PORT" "$STATUS_PID" "${1:-100000}" "${2:-64}" \
  -c "$TMP/config.lua"

# bench/stores.sh: sourced by the chat benchmarks. Makes TMP, starts a private Redis and
# MariaDB on free ports ($REDIS_PORT, $MYSQL_PORT; database chathost_bench, password
# benchpw), builds chat_load into $TMP, and registers the cleanup (processes in PIDS, then
# the stores) for exit.
. "$ROOT/tools/services.sh"
# The roles check every gRPC call against this shared secret, as production runs them (make
# run generates one); the base commit of a comparison ignores it.
export CHATHOST_GRPC_SECRET=${CHATHOST_GRPC_SECRET:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
TMP=$(mktemp -d /tmp/chathost-bench.XXXXXX)
PIDS=()
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  redis_stop "$TMP/redis" || true
  mariadb_stop "$TMP/mysql" || true
  rm -rf "$TMP"
}
trap bench_cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # as many descriptors as allowed
cc -O2 -o "$TMP/chat_load" "$ROOT/bench/chat_load.c" -luv
REDIS_PORT=$(free_port $((27000 + RANDOM % 1000)))
MYSQL_PORT=$(free_port $((24000 + RANDOM % 1000)))
redis_start "$TMP/redis" "$REDIS_PORT"
mariadb_start "$TMP/mysql" "$MYSQL_PORT"
mariadb_setup "$TMP/mysql" chathost_bench chathost benchpw
# two_chat_servers: free ports P1/R1/W1 and P2/R2/W2 (client, gRPC and WebSocket ports of chat
# servers b1 and b2; any Origin), $TMP/config.lua naming both and the stores above, exported as CHATHOST_CONFIG, and
# the migrations applied. (A benchmark then starts `chathost chat --name b1` and/or b2.)
two_chat_servers() {
  P1=$(free_port $((21000 + RANDOM % 1000))); R1=$(free_port $((P1 + 1)))
  P2=$(free_port $((R1 + 1))); R2=$(free_port $((P2 + 1)))
  W1=$(free_port $((R2 + 1))); W2=$(free_port $((W1 + 1)))
  cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$ROOT/scripts", watch = false },
  migrations = { dir = "$ROOT/sql" },
  redis = { port = $REDIS_PORT, pool_size = 4 },
  mysql = { port = $MYSQL_PORT, password = "benchpw", database = "chathost_bench", pool_size = 8 },
  chat = { ws_origins = { "*" }, instances = {
    b1 = { port = $P1, rpc_port = $R1, admin_port = 0, ws_port = $W1 },
    b2 = { port = $P2, rpc_port = $R2, admin_port = 0, ws_port = $W2 } } },
}
CFG
  export CHATHOST_CONFIG=$TMP/config.lua
  "$BIN" migrate >/dev/null
}

# bench/stores.sh: sourced by the chat benchmarks. Makes TMP, starts a private Redis and
# MariaDB on free ports ($REDIS_PORT, $MYSQL_PORT; database chathost_bench, password
# benchpw), builds chat_load into $TMP, and registers the cleanup (processes in PIDS, then
# the stores) for exit. With GALERA=1 the database is also on a local 3-node Galera
# cluster (tools/galera.sh): $GALERA_NODES lists its nodes ("host:port,..."), $DB_PID is
# the MariaDB whose CPU the benchmarks report (the plain server, or node 1).
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
  [ -d "$TMP/galera" ] && "$ROOT/tools/galera.sh" stop "$TMP/galera"
  rm -rf "$TMP"
}
trap bench_cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # as many descriptors as allowed
cc -O2 -o "$TMP/chat_load" "$ROOT/bench/chat_load.c" -luv
REDIS_PORT=$(free_port $((27000 + RANDOM % 1000)))
MYSQL_PORT=$(free_port $((24000 + RANDOM % 1000)))
redis_start "$TMP/redis" "$REDIS_PORT"
# InnoDB as a server with a disk of its own would run it, not as the specs' small instances
# (tools/services.sh: a 16 MiB redo log, a 64 MiB buffer pool, the page cleaner's defaults for
# spinning disks): with those, a chat benchmark's inserts filled the log within seconds and the
# page cleaner flushed in bursts about once a second, each holding every commit for 10-30 ms
# (bench/RESULTS.md, "The half-rate tail of the pair"). BENCH_INNODB replaces these settings; MARIADB_OPTS
# adds options, for diagnosis (e.g. --innodb-flush-log-at-trx-commit=2: not durable).
BENCH_INNODB=${BENCH_INNODB---innodb-log-file-size=512M --innodb-buffer-pool-size=512M --innodb-flush-neighbors=0 --innodb-io-capacity=400 --innodb-max-dirty-pages-pct-lwm=10}
# shellcheck disable=SC2086
mariadb_start "$TMP/mysql" "$MYSQL_PORT" $BENCH_INNODB ${MARIADB_OPTS:-}
mariadb_setup "$TMP/mysql" chathost_bench chathost benchpw
DB_PID=$(cat "$TMP/mysql/mysqld.pid")
GALERA_NODES=
if [ "${GALERA:-0}" = 1 ]; then
  chmod 0755 "$TMP" # the nodes run as user mysql when we are root
  GALERA_NODES=$("$ROOT/tools/galera.sh" start "$TMP/galera" chathost_bench chathost benchpw |
    sed -n 's/^CHATHOST_MYSQL_NODES=//p')
  DB_PID=$(cat "$TMP/galera/node1/launcher.pid")
fi
# chat_servers N: free ports CP[i]/CR[i]/CW[i] (client, gRPC and WebSocket ports of chat
# server b<i>, i = 1..N; any Origin), also as P1/R1/W1 and P2/R2/W2 for the first two,
# $TMP/config.lua naming them and the stores above, exported as CHATHOST_CONFIG, and the
# migrations applied. (A benchmark then starts `chathost chat --name b<i>`.) CHAT_EXTRA: more
# fields of the chat section, e.g. CHAT_EXTRA="push_lanes = 2,". ADMIN_BASE=P: server b<i>
# serves /metrics on port P + i (default: no admin listener), to read its histograms after a run.
chat_servers() {
  local n=$1 i next=$((21000 + RANDOM % 1000)) instances=""
  CP=(); CR=(); CW=()
  for i in $(seq 1 "$n"); do
    CP[$i]=$(free_port "$next"); CR[$i]=$(free_port $((CP[i] + 1))); CW[$i]=$(free_port $((CR[i] + 1)))
    next=$((CW[i] + 1))
    local admin=0; [ -n "${ADMIN_BASE:-}" ] && admin=$((ADMIN_BASE + i))
    instances="$instances    b$i = { port = ${CP[$i]}, rpc_port = ${CR[$i]}, admin_port = $admin, ws_port = ${CW[$i]} },
"
  done
  P1=${CP[1]}; R1=${CR[1]}; W1=${CW[1]}; P2=${CP[2]:-}; R2=${CR[2]:-}; W2=${CW[2]:-}
  cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$ROOT/scripts", watch = false },
  migrations = { dir = "$ROOT/sql" },
  redis = { port = $REDIS_PORT, pool_size = 4 },
  mysql = { port = $MYSQL_PORT, password = "benchpw", database = "chathost_bench", pool_size = 8,
            nodes = { $(echo "$GALERA_NODES" | sed 's/[^,][^,]*/"&"/g') },
            policy = "${GALERA_POLICY:-prefer_first}" },
  chat = { ws_origins = { "*" }, ${CHAT_EXTRA:-} instances = {
$instances  } },
}
CFG
  export CHATHOST_CONFIG=$TMP/config.lua
  "$BIN" migrate >/dev/null
}
two_chat_servers() { chat_servers 2; }

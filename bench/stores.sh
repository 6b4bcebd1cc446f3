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
mariadb_start "$TMP/mysql" "$MYSQL_PORT"
mariadb_setup "$TMP/mysql" chathost_bench chathost benchpw
DB_PID=$(cat "$TMP/mysql/mysqld.pid")
GALERA_NODES=
if [ "${GALERA:-0}" = 1 ]; then
  chmod 0755 "$TMP" # the nodes run as user mysql when we are root
  GALERA_NODES=$("$ROOT/tools/galera.sh" start "$TMP/galera" chathost_bench chathost benchpw |
    sed -n 's/^CHATHOST_MYSQL_NODES=//p')
  DB_PID=$(cat "$TMP/galera/node1/launcher.pid")
fi

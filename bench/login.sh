#!/usr/bin/env bash
# bench/login.sh [SECONDS] [CONNECTIONS]: POST /user_login with real argon2id verification
# through one gate process (with its status role, Redis and MariaDB), at saturation. Prints
# logins/s, latency percentiles, the gate's CPU per login, and how much of it is the
# password hash. Needs a built tree and wrk.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
SECS=${1:-15}
CONNS=${2:-32}
USERS=20
PASSWORD='Bench123!'
command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
. "$ROOT/tools/services.sh"
# The roles check every gRPC call against this shared secret, as production runs them (make
# run generates one); the base commit of a comparison ignores it.
export CHATHOST_GRPC_SECRET=${CHATHOST_GRPC_SECRET:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
TMP=$(mktemp -d /tmp/chathost-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  redis_stop "$TMP/redis" || true
  mariadb_stop "$TMP/mysql" || true
  rm -rf "$TMP"
}
trap cleanup EXIT

REDIS_PORT=$(free_port $((27000 + RANDOM % 1000)))
MYSQL_PORT=$(free_port $((24000 + RANDOM % 1000)))
STATUS_PORT=$(free_port $((21000 + RANDOM % 1000)))
GATE_PORT=$(free_port $((22000 + RANDOM % 1000)))
ADMIN_PORT=$(free_port $((GATE_PORT + 1)))
redis_start "$TMP/redis" "$REDIS_PORT"
mariadb_start "$TMP/mysql" "$MYSQL_PORT"
mariadb_setup "$TMP/mysql" chathost_bench chathost benchpw
cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$ROOT/scripts", watch = false },
  migrations = { dir = "$ROOT/sql" },
  redis = { port = $REDIS_PORT },
  mysql = { port = $MYSQL_PORT, password = "benchpw", database = "chathost_bench" },
  gate = { host = "127.0.0.1", port = $GATE_PORT, admin_port = $ADMIN_PORT, access_log = false,
           accounts = { login_ip_limit = 1000000 } },
  status = { port = $STATUS_PORT, admin_port = 0 },
  chat = { instances = { chat1 = { host = "127.0.0.1", port = 8090 } } },
}
CFG
export CHATHOST_CONFIG=$TMP/config.lua
"$BIN" migrate >"$TMP/migrate.log" 2>&1 || { cat "$TMP/migrate.log" >&2; exit 1; }
mapfile -t SETUP < <("$BIN" exec "$ROOT/bench/login_setup.lua" "$USERS" "$PASSWORD")
OBF=${SETUP[0]}
read -r VERIFY_CPU_MS VERIFY_WALL_MS <<<"${SETUP[1]}"
redis-cli -p "$REDIS_PORT" set chatserver_chat1 '{"host":"127.0.0.1","port":8090}' >/dev/null

"$BIN" status & STATUS_PID=$!; PIDS+=($STATUS_PID)
"$BIN" gate & GATE_PID=$!; PIDS+=($GATE_PID)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$GATE_PORT") 2>/dev/null && break; sleep 0.05; done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hash_cpu() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^chathost_hash_cpu_seconds_total / {print $2}'; }
export BENCH_USERS=$USERS BENCH_PASSWD_OBF=$OBF
wrk -t1 -c"$CONNS" -d3s -s "$ROOT/bench/login_wrk.lua" "http://127.0.0.1:$GATE_PORT" >/dev/null # warm-up
G0=$(ticks "$GATE_PID"); S0=$(ticks "$STATUS_PID"); H0=$(hash_cpu)
OUT=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$ROOT/bench/login_wrk.lua" "http://127.0.0.1:$GATE_PORT")
G1=$(ticks "$GATE_PID"); S1=$(ticks "$STATUS_PID"); H1=$(hash_cpu)
echo "$OUT" | grep -E "Requests/sec|failed logins|  50%|  90%|  99%"
RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
HZ=$(getconf CLK_TCK)
awk -v rps="$RPS" -v g=$((G1 - G0)) -v st=$((S1 - S0)) -v hz="$HZ" -v s="$SECS" \
    -v vc="$VERIFY_CPU_MS" -v vw="$VERIFY_WALL_MS" -v h0="$H0" -v h1="$H1" 'BEGIN {
  n = rps * s
  gate_ms = g / hz * 1e3 / n
  hash_ms = (h1 - h0) * 1e3 / n
  printf "one argon2id verification alone (setup process): %.1f ms CPU\n", vc
  printf "gate CPU per login:      %.2f ms (all threads)\n", gate_ms
  printf "  of which hashing:      %.2f ms (thread CPU measured around each verify)\n", hash_ms
  printf "  everything else:       %.3f ms = %.1f%% of the login\n", gate_ms - hash_ms, 100 * (gate_ms - hash_ms) / gate_ms
  printf "status CPU per login:    %.3f ms\n", st / hz * 1e3 / n
}'

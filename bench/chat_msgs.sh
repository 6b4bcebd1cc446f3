#!/usr/bin/env bash
# bench/chat_msgs.sh [SERVERS=1|2] [PAIRS] [SECONDS] [WINDOW]: text messages between friend
# pairs through real chat servers (private Redis and MariaDB on this machine, durable
# commits: innodb_flush_log_at_trx_commit=1). First at full speed (WINDOW messages in flight
# per sender) for the peak, then at half of that rate for latency. A message counts when it
# is stored, acked (1018) and pushed (1019 at the peer). With SERVERS=2 the two users of a
# pair are on different chat servers (the push crosses gRPC). Besides b1's CPU per message,
# the peak prints the CPU per message of every server-side process together (chat servers,
# Redis, MariaDB): what the two shared cores pay for a message, the figure that decides
# whether two servers deliver as much as one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
NSERVERS=${1:-1}
PAIRS=${2:-500}
SECS=${3:-10}
WINDOW=${4:-4}
. "$ROOT/bench/stores.sh"
P1=$(free_port $((21000 + RANDOM % 1000))); R1=$(free_port $((P1 + 1)))
P2=$(free_port $((R1 + 1))); R2=$(free_port $((P2 + 1)))
cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$ROOT/scripts", watch = false },
  migrations = { dir = "$ROOT/sql" },
  redis = { port = $REDIS_PORT, pool_size = 4 },
  mysql = { port = $MYSQL_PORT, password = "benchpw", database = "chathost_bench", pool_size = 8 },
  chat = { instances = {
    b1 = { port = $P1, rpc_port = $R1, admin_port = 0 },
    b2 = { port = $P2, rpc_port = $R2, admin_port = 0 } } },
}
CFG
export CHATHOST_CONFIG=$TMP/config.lua
"$BIN" migrate >/dev/null
"$BIN" exec "$ROOT/bench/chat_setup.lua" "$PAIRS" "$TMP/users" "$NSERVERS"
"$BIN" chat --name b1 & C1=$!; PIDS+=($C1)
SERVERS="127.0.0.1:$P1"
if [ "$NSERVERS" = 2 ]; then "$BIN" chat --name b2 & C2=$!; PIDS+=($C2); SERVERS="$SERVERS,127.0.0.1:$P2"; fi
sleep 1
# up to 30 s: a loaded machine starts the servers slowly
for p in "$P1" ${C2:+"$P2"}; do
  for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
DB=$(cat "$TMP/mysql/mysqld.pid"); RD=$(cat "$TMP/redis/redis.pid")
all_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }
STORES=("$C1" ${C2:+"$C2"} "$RD" "$DB")
T0=$(ticks "$C1"); D0=$(ticks "$DB"); A0=$(all_ticks "${STORES[@]}")
PEAK_OUT=$("$TMP/chat_load" msg "$TMP/users" "$SERVERS" --window "$WINDOW" --seconds "$SECS")
T1=$(ticks "$C1"); D1=$(ticks "$DB"); A1=$(all_ticks "${STORES[@]}")
echo "== peak ($NSERVERS chat server(s), $PAIRS pairs, $WINDOW in flight per sender)"
echo "$PEAK_OUT"
PEAK=$(echo "$PEAK_OUT" | awk '/^acked:/ {print $2}')
awk -v t=$((T1 - T0)) -v d=$((D1 - D0)) -v a=$((A1 - A0)) -v hz="$(getconf CLK_TCK)" -v r="$PEAK" -v s="$SECS" 'BEGIN {
  printf "chat server b1 CPU per message: %.1f us\n", t / hz * 1e6 / (r * s)
  printf "MariaDB CPU per message: %.1f us\n", d / hz * 1e6 / (r * s)
  printf "chat servers + Redis + MariaDB CPU per message: %.1f us\n", a / hz * 1e6 / (r * s) }'
HALF=$(awk -v p="$PEAK" 'BEGIN { printf "%d", p / 2 }')
echo "== at half of the peak: $HALF msgs/s"
"$BIN" exec "$ROOT/bench/chat_tokens.lua" "$TMP/users" # the peak's logins used the tokens up
"$TMP/chat_load" msg "$TMP/users" "$SERVERS" --rate "$HALF" --seconds "$SECS"

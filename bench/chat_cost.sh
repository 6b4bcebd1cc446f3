#!/usr/bin/env bash
# bench/chat_cost.sh [SERVERS=1|2] [PAIRS=100] [RATE=200]: the instructions the chat
# servers execute per text message (callgrind) and the Redis commands per message, counted
# rather than timed. The Redis count is exact but for the servers' own timers (reports,
# a few commands a second); the instructions still move by +-15% between runs on a loaded
# machine (how many messages share a loop turn, a group commit or a call follows timing),
# so compare several runs of each build, alternately.
# Same set-up as chat_msgs.sh (private Redis and MariaDB, SERVERS chat servers, PAIRS friend
# pairs, with 2 servers the two users of a pair on different servers), but every chat server
# runs under callgrind and the texts go at a fixed RATE msgs/s (low enough for servers under
# valgrind: no timeouts, so both runs do the same work per message). Two runs, 2 s and 8 s,
# each counted from its start to the end of its drain (every message acked and pushed);
# per message = (instructions of the long run - of the short) / (messages of the long run -
# of the short): the logins and set-up of each run cancel out. The Redis commands per
# message are counted the same way (INFO commandstats). Needs valgrind. CG_DIR=DIR keeps each
# server's profile of the long run there, for callgrind_annotate. CHAT_EXTRA: more fields of
# the chat section, e.g. CHAT_EXTRA="push_link = false," (as in bench/stores.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
NSERVERS=${1:-1}
PAIRS=${2:-100}
RATE=${3:-200}
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
  chat = { ${CHAT_EXTRA:-} instances = {
    b1 = { port = $P1, rpc_port = $R1, admin_port = 0 },
    b2 = { port = $P2, rpc_port = $R2, admin_port = 0 } } },
}
CFG
export CHATHOST_CONFIG=$TMP/config.lua
"$BIN" migrate >/dev/null
"$BIN" exec "$ROOT/bench/chat_setup.lua" "$PAIRS" "$TMP/users" "$NSERVERS"
CHATS=(); SERVERS=
for i in $(seq 1 "$NSERVERS"); do
  valgrind -q --tool=callgrind --callgrind-out-file="$TMP/cg.b$i.%p" "$BIN" chat --name "b$i" &
  CHATS+=($!); PIDS+=($!)
  port=$([ "$i" = 1 ] && echo "$P1" || echo "$P2")
  SERVERS="$SERVERS${SERVERS:+,}127.0.0.1:$port"
  # up to 60 s: a server under valgrind on a loaded machine starts slowly
  for _ in $(seq 1 1200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
done
: >"$TMP/window"
# instructions of every chat server since its counters were zeroed
instructions() {
  local total=0 p f
  for p in "${CHATS[@]}"; do
    callgrind_control -d "$p" >/dev/null
    f=$(ls -t "$TMP"/cg.b*."$p".* | head -1)
    total=$((total + $(awk '/^(summary|totals):/ {print $2; exit}' "$f")))
  done
  echo "$total"
}
redis_calls() {
  redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,]' '/^cmdstat_/ {n += $2} END {print n}'
}
# run SECONDS -> "instructions messages redis_commands" (messages: acked and pushed, every one)
run() {
  "$BIN" exec "$ROOT/bench/chat_tokens.lua" "$TMP/users"
  for p in "${CHATS[@]}"; do callgrind_control -z "$p" >/dev/null; done
  local r0; r0=$(redis_calls)
  local out; out=$("$TMP/chat_load" msg "$TMP/users" "$SERVERS" --rate "$RATE" --seconds "$1" \
    --split "$TMP/window" 2>/dev/null)
  echo "$out" | grep -E "^(sent|failed)" >&2
  local r1; r1=$(redis_calls)
  echo "$(instructions) $(echo "$out" | sed -n 's/.*, acked \([0-9]*\), pushed.*/\1/p') $((r1 - r0))"
}
read -r I1 M1 C1 < <(run 2)
read -r I2 M2 C2 < <(run 8)
if [ -n "${CG_DIR:-}" ]; then
  mkdir -p "$CG_DIR"
  for p in "${CHATS[@]}"; do cp "$(ls -t "$TMP"/cg.b*."$p".* | head -1)" "$CG_DIR/"; done
fi
echo "== $NSERVERS chat server(s), $PAIRS pairs, $RATE msgs/s"
awk -v i1="$I1" -v m1="$M1" -v i2="$I2" -v m2="$M2" -v c1="$C1" -v c2="$C2" 'BEGIN {
  printf "runs: %d messages in %.0f instructions and %d Redis commands, %d in %.0f and %d\n",
    m1, i1, c1, m2, i2, c2
  printf "chat servers: %.0f instructions per message\n", (i2 - i1) / (m2 - m1)
  printf "Redis: %.2f commands per message\n", (c2 - c1) / (m2 - m1) }'

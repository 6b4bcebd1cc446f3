#!/usr/bin/env bash
# bench/chat_groups.sh [SIZE] [GROUPS] [SENDERS] [SECONDS] [WINDOW]: group message fan-out
# (issue 14) through two real chat servers (private Redis and MariaDB on this machine):
# GROUPS groups of SIZE members, every member logged in, members alternating between the
# two servers, SENDERS members of each group sending 1065 with WINDOW in flight each. First
# at full speed for the peak, then at half of that rate for latency. A delivery is one 1067
# at a member; every message stored and acked (1066) should reach SIZE - 1 members. Prints
# deliveries/s and both chat servers' CPU microseconds per delivery; compare with
# bench/chat_echo.sh's floor run in the same hour. SENDERS defaults to 8: with 2 a group the
# generator's 32 messages in flight, not the servers, bound the peak (bench/RESULTS.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
SIZE=${1:-100}
NGROUPS=${2:-4}
SENDERS=${3:-8}
SECS=${4:-10}
WINDOW=${5:-4}
. "$ROOT/bench/stores.sh"
two_chat_servers
"$BIN" exec "$ROOT/bench/chat_groups_setup.lua" "$NGROUPS" "$SIZE" "$SENDERS" "$TMP/users"
"$BIN" exec "$ROOT/bench/chat_tokens.lua" "$TMP/users" # a login token for every user
"$BIN" chat --name b1 & C1=$!; PIDS+=($C1)
"$BIN" chat --name b2 & C2=$!; PIDS+=($C2)
SERVERS="127.0.0.1:$P1,127.0.0.1:$P2"
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per_delivery() { # label ticks1 ticks2 deliveries/s
  awk -v t1="$2" -v t2="$3" -v hz="$(getconf CLK_TCK)" -v r="$4" -v s="$SECS" -v l="$1" 'BEGIN {
    printf "%s: chat servers CPU per delivery: %.2f us (b1 %.2f, b2 %.2f)\n", l,
      (t1 + t2) / hz * 1e6 / (r * s), t1 / hz * 1e6 / (r * s), t2 / hz * 1e6 / (r * s) }'
}
# the group messages stored so far (the server-side count that "acked == stored" checks)
stored() { mariadb --socket="$TMP/mysql/mysqld.sock" -uroot -N -e \
  "SELECT COUNT(*) FROM chathost_bench.chat_message" 2>/dev/null || echo "?"; }
# check LABEL STORED_BEFORE OUTPUT: stored rows against acked, deliveries against acked x (SIZE - 1)
check() {
  local s1 acked pushed; s1=$(stored)
  acked=$(echo "$3" | awk '/^totals:/ {gsub(",", ""); print $3}')
  pushed=$(echo "$3" | awk '/^totals:/ {gsub(",", ""); print $5}')
  echo "$1: stored $((s1 - $2)), acked $acked (stored - acked <= the $((NGROUPS * SENDERS * WINDOW)) in flight at the end); deliveries $pushed of acked x $((SIZE - 1)) = $((acked * (SIZE - 1)))"
}
S0=$(stored)
A0=$(ticks "$C1"); B0=$(ticks "$C2")
PEAK_OUT=$("$TMP/chat_load" group "$TMP/users" "$SERVERS" --window "$WINDOW" --seconds "$SECS")
A1=$(ticks "$C1"); B1=$(ticks "$C2")
echo "== peak ($NGROUPS groups of $SIZE, $SENDERS senders each, $WINDOW in flight per sender)"
echo "$PEAK_OUT"
PEAK=$(echo "$PEAK_OUT" | awk '/^acked:/ {print $2}')
DELIV=$(echo "$PEAK_OUT" | awk '/^acked:/ {print $5}')
per_delivery "peak" $((A1 - A0)) $((B1 - B0)) "$DELIV"
sleep 1 # the messages in flight at the end are stored meanwhile
check "peak" "$S0" "$PEAK_OUT"
HALF=$(awk -v p="$PEAK" 'BEGIN { printf "%d", p / 2 }')
echo "== at half of the peak: $HALF group messages/s"
"$BIN" exec "$ROOT/bench/chat_tokens.lua" "$TMP/users" # the peak's logins used the tokens up
S0=$(stored)
A0=$(ticks "$C1"); B0=$(ticks "$C2")
HALF_OUT=$("$TMP/chat_load" group "$TMP/users" "$SERVERS" --rate "$HALF" --seconds "$SECS")
A1=$(ticks "$C1"); B1=$(ticks "$C2")
echo "$HALF_OUT"
per_delivery "half" $((A1 - A0)) $((B1 - B0)) "$(echo "$HALF_OUT" | awk '/^acked:/ {print $5}')"
sleep 1
check "half" "$S0" "$HALF_OUT"

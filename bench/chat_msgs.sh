#!/usr/bin/env bash
# bench/chat_msgs.sh [SERVERS=1..5] [PAIRS] [SECONDS] [WINDOW]: text messages between friend
# pairs through real chat servers (private Redis and MariaDB on this machine, durable
# commits: innodb_flush_log_at_trx_commit=1). First at full speed (WINDOW messages in flight
# per sender) for the peak, then at half of that rate for latency. A message counts when it
# is stored, acked (1018) and pushed (1019 at the peer). With SERVERS=2 the two users of a
# pair are on different chat servers (the push crosses gRPC), each server holding the sender of
# every other pair (LAYOUT=senders: every sender on b1, every receiver on b2, the layout of the
# runs before 2026-12-07 12:00, where b1 stores all and b2 only delivers); with 3 to 5, each user is on a
# server drawn at random (a pair crosses servers with probability 1 - 1/SERVERS). GALERA=1: MariaDB is a local
# 3-node Galera cluster (tools/galera.sh) instead of one server, the chat servers' pools
# on its nodes with mysql.policy GALERA_POLICY (default prefer_first).
# TRANSPORT=ws: every user connects over WebSocket (docs/protocol.md §5.5) instead of the
# TCP frames.
# Besides b1's CPU per message, the peak prints the CPU per message of every server-side
# process together (chat servers, Redis, MariaDB): what the two shared cores pay for a
# message, the figure that decides whether two servers deliver as much as one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
NSERVERS=${1:-1}
PAIRS=${2:-500}
SECS=${3:-10}
WINDOW=${4:-4}
# Each run loads WARMUP_MS (default 1000) before it counts: the first moments after the logins
# (caches, connections, the store's first pages) are not the steady state being measured.
# TRACE_FILE: the half-rate run's every latency sample (send time, ms, ack or push) goes there.
WARMUP_MS=${WARMUP_MS:-1000}
. "$ROOT/bench/stores.sh"
case "$NSERVERS" in [1-5]) ;; *) echo "SERVERS: 1 to 5" >&2; exit 2;; esac
chat_servers "$((NSERVERS > 2 ? NSERVERS : 2))"
"$BIN" exec "$ROOT/bench/chat_setup.lua" "$PAIRS" "$TMP/users" "$NSERVERS" "${LAYOUT:-balanced}"
WS=()
if [ "${TRANSPORT:-tcp}" = ws ]; then WS=(--ws); fi
SERVERS=""; CHATS=(); PORTS=()
for i in $(seq 1 "$NSERVERS"); do
  "$BIN" chat --name "b$i" & CHATS+=($!); PIDS+=($!)
  port=${CP[$i]}; if [ ${#WS[@]} -gt 0 ]; then port=${CW[$i]}; fi
  PORTS+=("$port"); SERVERS="$SERVERS${SERVERS:+,}127.0.0.1:$port"
done
C1=${CHATS[0]}
sleep 1
# up to 30 s: a loaded machine starts the servers slowly
for p in "${PORTS[@]}"; do
  for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
DB=$DB_PID; RD=$(cat "$TMP/redis/redis.pid")
all_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }
STORES=("${CHATS[@]}" "$RD" "$DB")
# stored == acked: chat_message rows before and after each run, next to the acks counted
# (warm-up included); a message still in flight when the run stops is stored but never
# acked, so stored - acked is at most the messages in flight (senders x WINDOW at the peak)
stored() { "$BIN" exec "$ROOT/bench/chat_stored.lua"; }
stored_line() { # ROWS_BEFORE RUN_OUTPUT
  local now acked; now=$(stored)
  acked=$(echo "$2" | awk '/^acked with the/ {n = $NF} /^totals:/ {t = $3; sub(",", "", t)} END {print n ? n : t}')
  echo "stored: $((now - $1)) messages, acked $acked (stored - acked: $((now - $1 - acked)), in flight when the run stopped)"
  S_NOW=$now; }
S0=$(stored)
T0=$(ticks "$C1"); D0=$(ticks "$DB"); A0=$(all_ticks "${STORES[@]}")
PEAK_OUT=$("$TMP/chat_load" msg "$TMP/users" "$SERVERS" "${WS[@]}" --window "$WINDOW" --seconds "$SECS" --warmup "$WARMUP_MS")
T1=$(ticks "$C1"); D1=$(ticks "$DB"); A1=$(all_ticks "${STORES[@]}")
echo "== peak ($NSERVERS chat server(s), $PAIRS pairs, $WINDOW in flight per sender${GALERA_NODES:+, Galera $GALERA_NODES ${GALERA_POLICY:-prefer_first}})"
echo "$PEAK_OUT"
sleep 1 # what was in flight is stored meanwhile
stored_line "$S0" "$PEAK_OUT"; S1=$S_NOW
PEAK=$(echo "$PEAK_OUT" | awk '/^acked:/ {print $2}')
# the CPU ticks span the warm-up too: divided by every message acked meanwhile
ALL=$(echo "$PEAK_OUT" | awk -v r="$PEAK" -v s="$SECS" '/^acked with the/ {n = $NF} END {print n ? n : r * s}')
awk -v t=$((T1 - T0)) -v d=$((D1 - D0)) -v a=$((A1 - A0)) -v hz="$(getconf CLK_TCK)" -v n="$ALL" 'BEGIN {
  printf "chat server b1 CPU per message: %.1f us\n", t / hz * 1e6 / n
  printf "MariaDB CPU per message: %.1f us\n", d / hz * 1e6 / n
  printf "chat servers + Redis + MariaDB CPU per message: %.1f us\n", a / hz * 1e6 / n }'
HALF=$(awk -v p="$PEAK" 'BEGIN { printf "%d", p / 2 }')
HALF=${HALF_RATE:-$HALF} # HALF_RATE=N: the second run at N msgs/s instead (latency against load)
echo "== at half of the peak: $HALF msgs/s"
"$BIN" exec "$ROOT/bench/chat_tokens.lua" "$TMP/users" # the peak's logins used the tokens up
# METRICS_DIR (with ADMIN_BASE, bench/stores.sh): each server's /metrics before and after the
# half-rate run, to diff its histograms (e.g. chathost_grpc_client_call_seconds)
scrape() { [ -n "${METRICS_DIR:-}" ] && [ -n "${ADMIN_BASE:-}" ] || return 0
  mkdir -p "$METRICS_DIR"; local i
  for i in $(seq 1 "$NSERVERS"); do curl -s "http://127.0.0.1:$((ADMIN_BASE + i))/metrics" >"$METRICS_DIR/b$i.$1"; done; }
scrape before
TRACE=(); if [ -n "${TRACE_FILE:-}" ]; then TRACE=(--trace "$TRACE_FILE"); fi
HALF_OUT=$("$TMP/chat_load" msg "$TMP/users" "$SERVERS" "${WS[@]}" --rate "$HALF" --seconds "$SECS" --warmup "$WARMUP_MS" "${TRACE[@]}")
echo "$HALF_OUT"
scrape after
sleep 1
stored_line "$S1" "$HALF_OUT"

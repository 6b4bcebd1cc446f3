#!/usr/bin/env bash
# bench/chat_users.sh [USERS] [SERVERS] [GENERATORS] [HOLD_S]: USERS logged-in users held by
# SERVERS chat servers on this machine, through the real login path: every user gets its
# token and its server from the status role (StatusService.GetChatServer, chosen by
# status.policy), then logs in with 1005; after 1018 it starts again with a new token (as
# the client does). All users start at once (a storm). Then every user sends a heartbeat
# (1023) every 10 s for HOLD_S seconds. GENERATORS processes run the users, each from its
# own source addresses (127.0.<k>.<g>), so no process passes the 20,000 descriptors a
# process may hold here, nor a source address its ports.
# Prints: users logged in, retries and why, login rate, heartbeat p50/p99, users per chat
# server (max / mean), and the chat servers' RSS: total, growth over the logged-in users.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
USERS=${1:-10000}
SERVERS=${2:-$(( (USERS + 16999) / 17000 ))}
GENS=${3:-$(( (USERS + 13999) / 14000 ))}
HOLD=${4:-30}
BEAT_MS=10000
[ "$GENS" -lt 1 ] && GENS=1
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
. "$ROOT/bench/stores.sh"
CHATHOST_GRPC_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CHATHOST_GRPC_SECRET
SP=$(free_port $((21000 + RANDOM % 1000)))
INST=""
PORTS=()
for i in $(seq 1 "$SERVERS"); do
  p=$(free_port $((22000 + RANDOM % 3000))); r=$(free_port $((p + 1)))
  PORTS+=("$p")
  INST="$INST u$i = { port = $p, rpc_port = $r, admin_port = 0 },"
done
cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "warn" },
  scripts = { dir = "$ROOT/scripts", watch = false },
  migrations = { dir = "$ROOT/sql" },
  redis = { port = $REDIS_PORT },
  mysql = { port = $MYSQL_PORT, password = "benchpw", database = "chathost_bench" },
  status = { port = $SP, admin_port = 0 },
  chat = { instances = { $INST } },
}
CFG
export CHATHOST_CONFIG=$TMP/config.lua
"$BIN" migrate >/dev/null
"$BIN" exec "$ROOT/bench/chat_setup.lua" $((USERS / 2)) "$TMP/users" 1
FIRST=$(awk 'NR == 1 || $1 < m {m = $1} END {print m}' "$TMP/users")
LAST=$(awk '$1 > m {m = $1} END {print m}' "$TMP/users")
[ $((LAST - FIRST + 1)) -eq "$USERS" ] || { echo "bench: uids not contiguous" >&2; exit 1; }
"$BIN" status 2>"$TMP/status.log" & PIDS+=($!)
CHATS=()
for i in $(seq 1 "$SERVERS"); do
  "$BIN" chat --name "u$i" 2>"$TMP/chat$i.log" & CHATS+=($!); PIDS+=($!)
done
for p in "$SP" "${PORTS[@]}"; do
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
done
sleep 1
rss_total() { local t=0; for c in "${CHATS[@]}"; do t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$c/status"))); done; echo "$t"; }
R0=$(rss_total)
PER=$(( (USERS + GENS - 1) / GENS ))
GPIDS=()
for g in $(seq 0 $((GENS - 1))); do
  a=$((FIRST + g * PER)); b=$((a + PER - 1)); [ "$b" -gt "$LAST" ] && b=$LAST
  [ "$a" -gt "$b" ] && continue
  src="127.0.1.$((g + 2)),127.0.2.$((g + 2)),127.0.3.$((g + 2))"
  "$BIN" exec "$ROOT/bench/users_load.lua" "127.0.0.1:$SP" "$a" "$b" "$src" "$BEAT_MS" "$HOLD" \
    "$TMP/gen$g" "$TMP/start" "${IN_FLIGHT:-256}" 2>"$TMP/gen$g.log" & GPIDS+=($!); PIDS+=($!)
done
sleep 1
touch "$TMP/start"
echo "storm: $USERS users, $SERVERS chat servers, ${#GPIDS[@]} generators"
while [ "$(ls "$TMP"/gen*.in 2>/dev/null | wc -l)" -lt "${#GPIDS[@]}" ]; do
  for p in "${GPIDS[@]}"; do kill -0 "$p" 2>/dev/null || { echo "bench: a generator died:" >&2; cat "$TMP"/gen*.log >&2; exit 1; }; done
  sleep 0.5
done
touch "$TMP/start.hold"
echo "all in; holding $HOLD s with heartbeats every $((BEAT_MS / 1000)) s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
sleep $((HOLD / 2))
R1=$(rss_total)
FDS=0; for c in "${CHATS[@]}"; do FDS=$((FDS + $(ls "/proc/$c/fd" | wc -l))); done
for p in "${GPIDS[@]}"; do wait "$p"; done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$TMP"/gen*.in | awk -v users="$USERS" -v r0="$R0" -v r1="$R1" -v fds="$FDS" '
  $1 == "stat" && $2 == "logged" { logged += $3 }
  $1 == "stat" && $2 == "retries" { retries += $3 }
  $1 == "stat" && $2 == "t_first" { if (!t0 || $3 < t0) t0 = $3 }
  $1 == "stat" && $2 == "t_last" { if ($3 > t1) t1 = $3 }
  $1 == "fail" { sub(/^fail /, ""); n = $NF; $NF = ""; why[$0] += n }
  $1 == "port" { per[$2] += $3 }
  END {
    printf "logged in: %d of %d users; retries %d\n", logged, users, retries
    for (w in why) printf "  retried after: %s%d\n", w, why[w]
    printf "login rate: %.0f users/s (%.1f s from the first GetChatServer to the last 1006)\n", logged / ((t1 - t0) / 1000), (t1 - t0) / 1000
    k = 0; max = 0
    for (p in per) { k++; if (per[p] > max) max = per[p]; line = line sprintf(" %s:%d", p, per[p]) }
    printf "users per chat server (port:users):%s\n", line
    printf "max / mean: %.3f\n", max / (logged / k)
    printf "chat servers RSS: %.1f MB before, %.1f MB held (%d descriptors open)\n", r0 / 1024, r1 / 1024, fds
    printf "per logged-in user: %.2f KB (RSS growth / logged-in users)\n", (r1 - r0) / logged
  }'
for g in $(seq 0 $((GENS - 1))); do
  awk '$1 == "hb" {print $2}' "$TMP/gen$g"
done | sort -n >"$TMP/hb"
awk '{v[NR] = $1} END {
  if (NR == 0) { print "heartbeats: none"; exit }
  printf "heartbeats while held: %d, 1023 -> 1024 ms p50 %.2f p99 %.2f max %.2f\n", NR, v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], v[NR] }' "$TMP/hb"
for g in $(seq 0 $((GENS - 1))); do awk '$1 == "stat" && $2 == "hb_lost" {print $3}' "$TMP/gen$g" 2>/dev/null; done |
  awk '{n += $1} END {printf "connections lost while held: %d\n", n}'
if [ -n "${KEEP_LOGS:-}" ]; then cp "$TMP"/*.log "$KEEP_LOGS"/; fi
grep -h -i "error\|warn" "$TMP"/chat*.log "$TMP/status.log" | grep -v "grpc.secret" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5 || true

#!/usr/bin/env bash
# bench/res_bench.sh: resource transfers (issue 13). Upload then download throughput with 1,
# 10 and 100 transfers at once against bench/res_floor.c (plain C receiver of the same
# frames: base64, pwrite/pread, no auth, no database) and against the resource role of a
# private system (Redis, MariaDB, status, one chat server, one resource process), both in
# the same run, alternating; then each server's RSS during 100 concurrent
# uploads at each RSS size (VmRSS sampled every 100 ms, VmHWM reset before with
# /proc/PID/clear_refs). The load is bench/res_load.c: the Season 2 client's exchange
# (1041, then 1037 with 5 chunks in flight; 1047 stop-and-wait); with the system every
# uploader logs in on the chat server and announces its images with 1035 first (not
# timed). Prints a markdown table for bench/RESULTS.md.
#
# Settings (environment):
#   SIZE=10485760          bytes per image
#   LEVELS="1 10 100"      transfers at once (one connection each)
#   MIN_BYTES=209715200    each level moves at least this much: a connection uploads
#                          ceil(MIN_BYTES / (level * SIZE)) images one after the other
#   ROUNDS=3               each level is run this many times, the order of floor and
#                          resource role alternating; the table gives medians (min-max),
#                          the ratio of the medians and the median of each round's ratio
#   RSS_CONNS=100 RSS_SIZES="1048576 10485760"   the RSS runs (uploads only)
#   SYSTEM=auto            1: the resource role too; 0: the floor alone; auto: the role if
#                          this checkout has it (scripts/resource/init.lua); aa: a second
#                          floor in the resource columns (how far apart two identical
#                          servers come out on the machine as it is: the noise band)
#   RES_EXTRA=""           Lua fields added to the config's resource section (the script
#                          sets max_file_bytes to the largest size and quota_bytes to 1 TiB)
#   RES_LOG=warn           the resource role's log level (info: each completion's file and
#                          rows ms in its log line, on stderr)
#   THREADS=0              1: after each run, the server's threads that ran (the loop first,
#                          then by time), their CPU time and their time runnable but waiting
#                          for a CPU, in ms per GB of payload (/proc/PID/task/*/schedstat), on
#                          stderr
#   FLOOR_CFLAGS=""        added to the floor's cc: -DRES_FLOOR_AVX2 gives it the role's
#                          base64 coders (AVX2) instead of the plain ones; -DRES_FLOOR_POOL
#                          makes it write chunks with uv_fs_write (libuv's pool, default 4
#                          threads) instead of pwrite on its loop, replies still in order
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
SIZE=${SIZE:-10485760}
LEVELS=${LEVELS:-"1 10 100"}
MIN_BYTES=${MIN_BYTES:-209715200}
RSS_CONNS=${RSS_CONNS:-100}
RSS_SIZES=${RSS_SIZES:-"1048576 10485760"}
ROUNDS=${ROUNDS:-3}
SYSTEM=${SYSTEM:-auto}
RES_EXTRA=${RES_EXTRA:-}
RES_LOG=${RES_LOG:-warn}
THREADS=${THREADS:-0}
if [ "$SYSTEM" = auto ]; then
  if [ -f "$ROOT/scripts/resource/init.lua" ]; then SYSTEM=1; else SYSTEM=0; fi
fi
case $SYSTEM in 0|1|aa) ;; *) echo "SYSTEM is auto, 0, 1 or aa" >&2; exit 2 ;; esac
MAX_LEVEL=$RSS_CONNS
for l in $LEVELS; do [ "$l" -gt "$MAX_LEVEL" ] && MAX_LEVEL=$l; done

if [ "$SYSTEM" = 1 ]; then
  [ -n "${CHATHOST_BIN:-}" ] || make -C "$ROOT" build >/dev/null
  . "$ROOT/bench/stores.sh" # TMP, PIDS, Redis, MariaDB, cleanup on exit
else
  . "$ROOT/tools/services.sh"
  TMP=$(mktemp -d /tmp/chathost-bench.XXXXXX)
  PIDS=()
  bench_cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
  trap bench_cleanup EXIT
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
cc -O2 -o "$TMP/res_load" "$ROOT/bench/res_load.c" -luv -lm
cc -O2 ${FLOOR_CFLAGS:-} -o "$TMP/res_floor" "$ROOT/bench/res_floor.c" -luv

mkdir -p "$TMP/floor"
FLOOR_PORT=$(free_port $((25000 + RANDOM % 1000)))
"$TMP/res_floor" "$FLOOR_PORT" "$TMP/floor" & FLOOR_PID=$!; PIDS+=($FLOOR_PID)

wait_port() { for _ in $(seq 1 200); do port_free "$1" || return 0; sleep 0.05; done; echo "nothing listens on $1" >&2; return 1; }
wait_port "$FLOOR_PORT"

if [ "$SYSTEM" = aa ]; then
  mkdir -p "$TMP/floor2"
  RP=$(free_port $((FLOOR_PORT + 1)))
  "$TMP/res_floor" "$RP" "$TMP/floor2" & RES_PID=$!; PIDS+=($RES_PID)
  wait_port "$RP"
fi

if [ "$SYSTEM" = 1 ]; then
  P1=$(free_port $((FLOOR_PORT + 1))); R1=$(free_port $((P1 + 1))); PS=$(free_port $((R1 + 1)))
  RP=$(free_port $((PS + 1))); RH=$(free_port $((RP + 1)))
  export CHATHOST_RESOURCE_URL_SECRET=${CHATHOST_RESOURCE_URL_SECRET:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
  # One file may be as large as the largest size of the run, and the bench's users have no
  # quota to speak of: the first user uploads ~70 images of SIZE over the run.
  RES_MAX=$SIZE; for s in $RSS_SIZES; do [ "$s" -gt "$RES_MAX" ] && RES_MAX=$s; done
  cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "$RES_LOG" },
  scripts = { dir = "$ROOT/scripts", watch = false },
  migrations = { dir = "$ROOT/sql" },
  redis = { port = $REDIS_PORT, pool_size = 4 },
  mysql = { port = $MYSQL_PORT, password = "benchpw", database = "chathost_bench", pool_size = 8 },
  status = { port = $PS, admin_port = 0 },
  chat = { instances = { b1 = { port = $P1, rpc_port = $R1, admin_port = 0 } } },
  resource = { port = $RP, http_port = $RH, admin_port = 0, dir = "$TMP/files",
    max_file_bytes = $RES_MAX, quota_bytes = 1099511627776, $RES_EXTRA },
}
CFG
  export CHATHOST_CONFIG=$TMP/config.lua
  "$BIN" migrate >/dev/null
  "$BIN" exec "$ROOT/bench/chat_setup.lua" "$MAX_LEVEL" "$TMP/users" 1
  "$BIN" status & PIDS+=($!)
  "$BIN" chat --name b1 & PIDS+=($!)
  "$BIN" resource & RES_PID=$!; PIDS+=($RES_PID)
  wait_port "$P1"; wait_port "$RP"
fi

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }
# schedstat PID: "tid run_ns wait_ns" of each of its threads
schedstat() { for t in /proc/"$1"/task/*; do echo "${t##*/} $(cut -d' ' -f1,2 "$t/schedstat" 2>/dev/null)"; done; }

# load TARGET MODE ARGS...: one res_load run against the floor or the system; echoes its
# RESULT line with the server's CPU seconds per GB of payload appended (cpu=...).
load() {
  local target=$1 mode=$2; shift 2
  local pid addr users chat
  if [ "$target" = floor ]; then
    pid=$FLOOR_PID; addr=127.0.0.1:$FLOOR_PORT; users=-; chat=-
  elif [ "$SYSTEM" = aa ]; then
    pid=$RES_PID; addr=127.0.0.1:$RP; users=-; chat=-
  else
    pid=$RES_PID; addr=127.0.0.1:$RP; users=$TMP/users; chat=127.0.0.1:$P1
    "$BIN" exec "$ROOT/bench/chat_tokens.lua" "$TMP/users" # a chat login uses its token up
  fi
  # Every run starts without dirty pages: the previous run's writes (gigabytes at 100 at
  # once) would otherwise be written back during this one, against whoever runs second.
  sync
  local t0 out t1 s0=""
  t0=$(ticks "$pid")
  [ "$THREADS" = 1 ] && s0=$(schedstat "$pid")
  out=$("$TMP/res_load" "$mode" "$users" "$chat" "$addr" "$@")
  echo "$out" >&2 # (not tee /dev/stderr: that reopens a redirected stderr file, truncating it)
  out=$(grep '^RESULT' <<<"$out")
  t1=$(ticks "$pid")
  if [ "$THREADS" = 1 ]; then
    local gb; gb=$(awk -v o="$out" 'BEGIN { n = split(o, f, " "); for (i = 1; i <= n; i++) {
      split(f[i], kv, "="); v[kv[1]] = kv[2] }; print v["size"] * v["done"] / 1e9 }')
    join <(sort <<<"$s0") <(schedstat "$pid" | sort) | awk -v pid="$pid" -v gb="$gb" '
      gb > 0 { r = ($4 - $2) / 1e6 / gb; w = ($5 - $3) / 1e6 / gb
        if (r >= 1) printf "%d %s %.0f/%.0f\n", ($1 == pid ? 1e9 : r), ($1 == pid ? "loop" : $1), r, w }' |
      sort -rn | awk -v t="$target $mode" '{ s = s "  " $2 " " $3 } END { print "threads (" t \
        ", ms per GB run/waiting):" s }' >&2
  fi
  awk -v o="$out" -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN {
    n = split(o, f, " "); for (i = 1; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
    bytes = v["size"] * v["done"]
    printf "%s cpu=%s\n", o, (bytes > 0 ? sprintf("%.1f", t / hz / (bytes / 1e9)) : "-") }'
}

# check TARGET: one image up and down with every byte compared, before anything is timed.
check() {
  load "$1" upload --conns 1 --size "$SIZE" --manifest "$TMP/check.$1" >/dev/null
  local out; out=$(load "$1" download --manifest "$TMP/check.$1" --verify)
  [ "$(field "$out" done)" = 1 ] || { echo "$1: the verified round trip failed: $out" >&2; exit 1; }
}

TARGETS=floor
[ "$SYSTEM" = 0 ] || TARGETS="floor system"
for t in $TARGETS; do check "$t"; done
rm -f "$TMP"/floor/* "$TMP"/floor2/*

# stat FILE KEY: the median of KEY over the RESULT lines of FILE, "(min-max)" after it
# when there are several; "-" without a file.
stat() {
  [ -s "$1" ] || { echo -; return; }
  awk -v k="$2" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$1" | sort -g |
    awk '{ v[NR] = $1 } END { m = v[int((NR + 1) / 2)]; if (NR > 1 && v[1] != v[NR]) printf "%s (%s-%s)", m, v[1], v[NR]; else printf "%s", m }'
}
median() { stat "$@" | cut -d' ' -f1; }
total() { [ -s "$1" ] && grep -o "$2=[0-9]*" "$1" | awk -F= '{ s += $2 } END { print s }' || echo -; }

ROWS=()
for level in $LEVELS; do
  repeat=$(( (MIN_BYTES + level * SIZE - 1) / (level * SIZE) ))
  for round in $(seq 1 "$ROUNDS"); do
    order=$TARGETS # odd rounds the floor first, even rounds the resource role first
    [ $((round % 2)) = 0 ] && order=$(tr ' ' '\n' <<<"$TARGETS" | tac | tr '\n' ' ')
    for t in $order; do
      echo "== $t: $level at once, $repeat image(s) of $SIZE bytes each, round $round" >&2
      load "$t" upload --conns "$level" --size "$SIZE" --repeat "$repeat" --manifest "$TMP/m.$t" >>"$TMP/r.$level.upload.$t"
      load "$t" download --manifest "$TMP/m.$t" >>"$TMP/r.$level.download.$t"
      rm -f "$TMP"/floor/* "$TMP"/floor2/*
    done
  done
  for dir in upload download; do
    f=$TMP/r.$level.$dir.floor s=$TMP/r.$level.$dir.system
    ratio=- paired=-
    [ -s "$s" ] && ratio=$(awk -v a="$(median "$s" mbps)" -v b="$(median "$f" mbps)" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    # each round's ratio (its floor and role runs back to back): less moved by the
    # machine's speed changing between rounds than the ratio of the two medians
    if [ -s "$s" ]; then
      paste <(grep -o 'mbps=[0-9.]*' "$f" | cut -d= -f2) <(grep -o 'mbps=[0-9.]*' "$s" | cut -d= -f2) |
        awk '$1 > 0 { printf "ratio=%.2f\n", $2 / $1 }' >"$TMP/r.$level.$dir.pairs"
      paired=$(stat "$TMP/r.$level.$dir.pairs" ratio)
    fi
    ROWS+=("| $level (x$repeat) | $dir | $(stat "$f" mbps) | $(stat "$s" mbps) | $ratio | $paired | $(median "$f" p50)/$(median "$f" p99) |\
 $(median "$s" p50)/$(median "$s" p99) | $(median "$f" cpu) | $(median "$s" cpu) | $(total "$f" failed)/$(total "$s" failed) |")
  done
done

# rss TARGET SIZE: peak VmRSS (sampled) and VmHWM of the server during RSS_CONNS uploads.
rss() {
  local pid=$FLOOR_PID; [ "$1" = system ] && pid=$RES_PID
  local before; before=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true # VmHWM := VmRSS (Linux >= 4.0)
  ( while kill -0 "$pid" 2>/dev/null; do awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; sleep 0.1; done ) \
    >"$TMP/rss.samples" & local sampler=$!
  local out; out=$(load "$1" upload --conns "$RSS_CONNS" --size "$2" --manifest "$TMP/rss.m")
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  local hwm; hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  local peak; peak=$(sort -n "$TMP/rss.samples" | tail -1)
  echo "$((before / 1024)) / $((peak / 1024)) / $((hwm / 1024)) MB ($(field "$out" failed) failed)"
}
RSS_ROWS=()
for size in $RSS_SIZES; do
  echo "== RSS: $RSS_CONNS uploads of $size bytes at once" >&2
  fr=$(rss floor "$size"); rm -f "$TMP"/floor/* "$TMP"/floor2/*
  sr="-"; [ "$SYSTEM" = 0 ] || sr=$(rss system "$size")
  RSS_ROWS+=("| $RSS_CONNS x $size B | $fr | $sr |")
done

echo
echo "Resource transfers: images of $SIZE bytes; MB/s = 10^6 payload bytes/s; chunk round trip ms"
echo "(chunk sent -> its ack; 1047 -> 1048); CPU = server utime+stime seconds per GB of payload."
echo
echo "| at once (images each) | direction | floor MB/s | resource MB/s | ratio | ratio of each round | floor p50/p99 ms | resource p50/p99 ms | floor CPU s/GB | resource CPU s/GB | failed floor/resource |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Server RSS during the uploads, MB: before / peak of VmRSS sampled every 100 ms / VmHWM"
echo
echo "| uploads at once | floor | resource |"
echo "|---|---|---|"
printf '%s\n' "${RSS_ROWS[@]}"

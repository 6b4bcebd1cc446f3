#!/usr/bin/env bash
# bench/chat_reload.sh [PAIRS] [PEAK_SECONDS] [LOAD_SECONDS] [RELOADS] [PAUSE_MS]: hot reload
# under chat traffic. One chat server (private Redis and MariaDB as in chat_msgs.sh) runs a
# private copy of scripts/ with watching on and the default scripts.reload_debounce_ms.
# First the one-server peak (4 texts in flight per sender, as chat_msgs.sh), then texts at
# half of it for LOAD_SECONDS; from 5 s on, scripts/chat/text.lua of the copy is saved
# RELOADS times (a comment added, then removed; two saves in a row written in place, the
# next two as a temp file renamed over it, as editors do), each after the previous reload's
# log line plus PAUSE_MS, in groups of 10 with as long a quiet time after each group (so
# the times with and without reloads see the same machine: it is shared). Reports save ->
# live (the save's close to the reload's log line), the load time the log line gives, p99
# of the texts sent during the groups next to those sent outside them, and every failed
# request (chat_load --split: refused, other frames, closed connections, missing acks or
# pushes): there must be none.
# RELOAD_CONTROL=1: the same saves to text.lua.bak (ignored by the watcher) and the same
# polling of the log for 25 ms, then PAUSE_MS: no reloads, what the rest costs the latencies.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
PAIRS=${1:-500}
PEAK_SECS=${2:-8}
LOAD_SECS=${3:-40}
RELOADS=${4:-100}
PAUSE_MS=${5:-100}
. "$ROOT/bench/stores.sh"
P1=$(free_port $((21000 + RANDOM % 1000))); R1=$(free_port $((P1 + 1)))
cp -r "$ROOT/scripts" "$TMP/scripts" # the copy is edited, never the repository's scripts
cat >"$TMP/config.lua" <<CFG
return {
  log = { level = "info" },
  scripts = { dir = "$TMP/scripts", watch = true },
  migrations = { dir = "$ROOT/sql" },
  redis = { port = $REDIS_PORT, pool_size = 4 },
  mysql = { port = $MYSQL_PORT, password = "benchpw", database = "chathost_bench", pool_size = 8 },
  chat = { instances = { b1 = { port = $P1, rpc_port = $R1, admin_port = 0 } } },
}
CFG
export CHATHOST_CONFIG=$TMP/config.lua
"$BIN" migrate >/dev/null
"$BIN" exec "$ROOT/bench/chat_setup.lua" "$PAIRS" "$TMP/users" 1
echo "debounce: $("$BIN" config scripts.reload_debounce_ms) ms"
"$BIN" chat --name b1 2>"$TMP/chat.log" & CHAT=$!; PIDS+=($CHAT)
echo "chat server pid $CHAT"
sleep 1
PEAK=$("$TMP/chat_load" msg "$TMP/users" "127.0.0.1:$P1" --window 4 --seconds "$PEAK_SECS" |
  awk '/^acked:/ {print $2}')
HALF=$(awk -v p="$PEAK" 'BEGIN { printf "%d", p / 2 }')
echo "== peak: $PEAK msgs/s; now $HALF msgs/s for $LOAD_SECS s, $RELOADS reloads from 5 s on"
"$TMP/chat_load" msg "$TMP/users" "127.0.0.1:$P1" --rate "$HALF" --seconds "$LOAD_SECS" \
  --split "$TMP/window" >"$TMP/load.out" & LOAD=$!
until grep -q "load started" "$TMP/load.out"; do kill -0 "$LOAD"; sleep 0.05; done
sleep 5
RELOAD_CONTROL=${RELOAD_CONTROL:-0} /usr/bin/python3 - "$TMP/scripts/chat/text.lua" "$TMP/chat.log" "$RELOADS" "$PAUSE_MS" "$TMP/window" "$CHAT" <<'PY'
import os, re, statistics, sys, time, calendar
path, log, n, pause_ms, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
hz = os.sysconf("SC_CLK_TCK")
def cpu():  # the chat server's CPU seconds (utime + stime)
    f = open("/proc/%s/stat" % sys.argv[6]).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz
orig = open(path).read()
control = os.environ["RELOAD_CONTROL"] == "1"
if control:
    path += ".bak"
line_re = re.compile(r"^(\S+)T(\S+)\.(\d{3})Z INFO  chat/b1 scripts reloaded \(changed: ([^)]*)\): .* loaded in ([\d.]+) ms$")
logf = open(log)
logf.seek(0, 2)
def stamp(date, hms, ms):  # the log's UTC time, in seconds
    return calendar.timegm(time.strptime(date + " " + hms, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
def await_reload(deadline):  # the next reload (or failure) line; None past the deadline
    buf = ""
    while time.time() < deadline:
        buf += logf.read()
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            if "script reload failed" in line:
                return ("failed", line)
            m = line_re.match(line)
            if m:
                return m
        time.sleep(0.002)
    return None
live, seen, load, failures, names, windows = [], [], [], 0, set(), []
cpu_in = cpu_out = 0.0
w0, c0 = time.monotonic_ns(), cpu()
for i in range(n):
    if i % 10 == 0 and i > 0:  # a group done: as long without reloads
        windows.append((w0, time.monotonic_ns()))
        open(window, "w").write("".join("%d %d\n" % w for w in windows))  # as it goes: read at the end
        c1 = cpu()
        cpu_in += c1 - c0
        time.sleep((windows[-1][1] - w0) / 1e9)
        w0, c0 = time.monotonic_ns(), cpu()
        cpu_out += c0 - c1
    text = orig + ("-- reload bench: save %d\n" % i if i % 2 == 0 else "")
    if i % 4 < 2:  # in place: truncate, then write
        with open(path, "w") as f: f.write(text)
    else:  # a temp file renamed over the script
        with open(path + ".tmp", "w") as f: f.write(text)
        os.rename(path + ".tmp", path)
    saved = time.time()
    if control:  # the same polling of the log as for a reload, for as long as one takes
        await_reload(saved + 0.025)
        time.sleep(pause_ms / 1000)
        continue
    m = await_reload(saved + 5)
    if m is None or isinstance(m, tuple):
        failures += 1
        print("save %d: %s" % (i, "no reload within 5 s" if m is None else m[1]))
        continue
    seen.append((time.time() - saved) * 1000)
    live.append((stamp(m.group(1), m.group(2), m.group(3)) - saved) * 1000)
    load.append(float(m.group(5)))
    names.add(m.group(4))
    time.sleep(pause_ms / 1000)
windows.append((w0, time.monotonic_ns()))
cpu_in += cpu() - c0
open(window, "w").write("".join("%d %d\n" % w for w in windows))
def mmm(v): return "min %.1f / median %.1f / max %.1f ms" % (min(v), statistics.median(v), max(v)) if v else "-"
print("reloads: %d of %d saves, %d failed or missing; log lines named: %s" % (len(live), n, failures, ", ".join(sorted(names))))
print("save -> live (log line's time, 1 ms steps): " + mmm(live))
print("save -> seen in the log by this script:     " + mmm(seen))
print("loading the generation (the log line):      " + mmm(load))
t_in = sum(b - a for a, b in windows) / 1e9
t_out = sum(windows[k + 1][0] - windows[k][1] for k in range(len(windows) - 1)) / 1e9
print("reload windows: %d, %.1f s in all" % (len(windows), t_in))
if t_out > 0:
    print("chat server CPU: %.0f%% of a core during the reload groups, %.0f%% in the quiet times between"
          % (100 * cpu_in / t_in, 100 * cpu_out / t_out))
PY
wait "$LOAD"
cat "$TMP/load.out"
echo "chat server log: $(grep -c 'scripts reloaded' "$TMP/chat.log") reloads, $(grep -c 'reload failed' "$TMP/chat.log" || true) failed, $(grep -c ' ERROR ' "$TMP/chat.log" || true) ERROR lines"

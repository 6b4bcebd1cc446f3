#!/usr/bin/env bash
# tools/sentinel.sh: a local Redis Sentinel setup for trying out failover: a master, one
# replica and three sentinels (quorum 2), real processes on loopback, data and logs under
# DIR (default .run/sentinel). Ports: master BASE, replica BASE+1, sentinels BASE+2..BASE+4
# (default BASE 6390). down-after-milliseconds is 1000 (Sentinel's default is 30 s), so a
# master killed with -9 is replaced within a few seconds; failover-timeout is 3000 (default
# 180 s): a failover whose leader election split the votes is tried again after twice that.
# SENTINEL_DOWN_AFTER_MS and SENTINEL_FAILOVER_TIMEOUT_MS override them.
#
#   tools/sentinel.sh start [DIR] [BASE]   starts what is not running (a data node killed
#                                          earlier comes back as the current master's
#                                          replica); prints the settings for chathost
#   tools/sentinel.sh stop [DIR]           stops all five and keeps DIR
#   tools/sentinel.sh master [DIR]         the address the sentinels name as master now
#
# The master's name is "chathost" (SENTINEL_MASTER_NAME overrides). Point chathost at it with
#   CHATHOST_REDIS_SENTINELS=127.0.0.1:6392,127.0.0.1:6393,127.0.0.1:6394
#   CHATHOST_REDIS_MASTER_NAME=chathost
# Each process's pid is in DIR/<node>/redis.pid (nodes: master, replica, s1, s2, s3); after
# a failover "master" and "replica" are only the roles they started with.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tools/services.sh"
NAME=${SENTINEL_MASTER_NAME:-chathost}
DOWN_AFTER_MS=${SENTINEL_DOWN_AFTER_MS:-1000}
FAILOVER_TIMEOUT_MS=${SENTINEL_FAILOVER_TIMEOUT_MS:-3000}

cmd=${1:-}
DIR=${2:-$ROOT/.run/sentinel}
[ "$cmd" = start ] && mkdir -p "$DIR"
[ -d "$DIR" ] && DIR=$(cd "$DIR" && pwd)

NODES=(master replica s1 s2 s3) # on ports BASE, BASE+1, ... BASE+4

# node_port NODE
node_port() {
  local i base; base=$(cat "$DIR/base_port")
  for i in 0 1 2 3 4; do [ "${NODES[$i]}" = "$1" ] && echo $((base + i)); done
}

# node_pid NODE: the pid in its pid file while that process is still this node's Redis or
# Sentinel (a pid left by a kill -9 may since belong to another process), or fails
node_pid() {
  local pid
  pid=$(cat "$DIR/$1/redis.pid" 2>/dev/null) || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "redis.*:$(node_port "$1")\b" &&
    echo "$pid"
}

# alive NODE: its process runs
alive() { node_pid "$1" >/dev/null; }

# node_stop NODE
node_stop() {
  local pid
  if pid=$(node_pid "$1"); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
  rm -f "$DIR/$1/redis.pid"
}

wait_ping() {
  local port=$1 what=$2
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "sentinel.sh: $what did not start on port $port; see $DIR" >&2
  return 1
}

# data_node NODE PORT [MASTER_PORT]
data_node() {
  local node=$1 port=$2 of=${3:-}
  alive "$node" && return 0
  mkdir -p "$DIR/$node"
  local args=(--port "$port" --bind 127.0.0.1 --dir "$DIR/$node" --save "" --appendonly no
              --daemonize yes --pidfile "$DIR/$node/redis.pid" --logfile "$DIR/$node/redis.log"
              --repl-diskless-sync yes --repl-diskless-sync-delay 0)
  [ -n "$of" ] && args+=(--replicaof 127.0.0.1 "$of")
  redis-server "${args[@]}"
  wait_ping "$port" "redis $node"
}

# sentinel_node NODE PORT MASTER_PORT: its config is written once (Sentinel rewrites it
# with what it learns, so a restarted sentinel knows the current master)
sentinel_node() {
  local node=$1 port=$2 mport=$3
  alive "$node" && return 0
  mkdir -p "$DIR/$node"
  if [ ! -f "$DIR/$node/sentinel.conf" ]; then
    cat >"$DIR/$node/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
daemonize yes
pidfile $DIR/$node/redis.pid
logfile $DIR/$node/sentinel.log
dir $DIR/$node
sentinel monitor $NAME 127.0.0.1 $mport 2
sentinel down-after-milliseconds $NAME $DOWN_AFTER_MS
sentinel failover-timeout $NAME $FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $NAME 1
CONF
  fi
  redis-sentinel "$DIR/$node/sentinel.conf"
  wait_ping "$port" "sentinel $node"
}

# current_master_port: the port of the master the running sentinels name, or fails
current_master_port() {
  local base; base=$(cat "$DIR/base_port" 2>/dev/null) || return 1
  for i in 2 3 4; do
    redis-cli -h 127.0.0.1 -p $((base + i)) --raw sentinel get-master-addr-by-name "$NAME" 2>/dev/null |
      sed -n 2p | grep . && return 0
  done
  return 1
}

# live_master_port: the current master's port once the sentinels name one whose process
# runs (a sentinel may still name the master just killed: that one must not come back as
# a second master), or fails after 30 s
live_master_port() {
  local m node
  for _ in $(seq 1 150); do
    if m=$(current_master_port); then
      node=replica
      [ "$m" = "$(cat "$DIR/base_port")" ] && node=master
      alive "$node" && { echo "$m"; return 0; }
    fi
    sleep 0.2
  done
  return 1
}

case "$cmd" in
  start)
    BASE=${3:-6390}
    # a port someone else answers on would fool the readiness checks below
    echo "$BASE" >"$DIR/base_port"
    for i in 0 1 2 3 4; do
      alive "${NODES[$i]}" || port_free $((BASE + i)) ||
        { echo "sentinel.sh: port $((BASE + i)) is taken" >&2; exit 1; }
    done
    # after a failover a data node started again joins the current master as its replica
    m=""
    if current_master_port >/dev/null; then
      m=$(live_master_port) || { echo "sentinel.sh: the sentinels name no running master" >&2; exit 1; }
    fi
    if [ -n "$m" ] && [ "$m" != "$BASE" ]; then data_node master "$BASE" "$m"; else data_node master "$BASE"; fi
    if [ -n "$m" ] && [ "$m" = $((BASE + 1)) ]; then data_node replica $((BASE + 1));
    else data_node replica $((BASE + 1)) "$BASE"; fi
    for i in 1 2 3; do sentinel_node "s$i" $((BASE + 1 + i)) "$BASE"; done
    echo "CHATHOST_REDIS_SENTINELS=127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3)),127.0.0.1:$((BASE + 4))"
    echo "CHATHOST_REDIS_MASTER_NAME=$NAME" ;;
  stop)
    [ -f "$DIR/base_port" ] || exit 0
    for node in s1 s2 s3 master replica; do node_stop "$node"; done ;;
  master)
    port=$(current_master_port) || { echo "sentinel.sh: no sentinel answered" >&2; exit 1; }
    echo "127.0.0.1:$port" ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    [ "$cmd" = "-h" ] || [ "$cmd" = "--help" ] || exit 2 ;;
esac

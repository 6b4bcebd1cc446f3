#!/usr/bin/env bash
# tools/galera.sh: a local 3-node MariaDB Galera cluster for trying chathost on it and for
# tests/db_galera_spec.lua and `GALERA=1 bench/chat_msgs.sh`. Real mariadbd processes on
# loopback ports, data and logs under DIR (node1/, node2/, node3/), never the system's
# instance (--defaults-file of our own). State transfer: rsync (wsrep_sst_rsync). Run as
# root, the nodes run as user mysql (the rsync daemon of a transfer started by root runs as
# nobody and cannot write the data directory), so DIR must be reachable by mysql.
#
#   tools/galera.sh start DIR [DB USER PASSWORD]   bootstrap node 1, join 2 and 3; with DB..
#                                                  also create the database and its user;
#                                                  prints CHATHOST_MYSQL_NODES=...
#   tools/galera.sh stop DIR                       stop every node
#   tools/galera.sh kill DIR N                     kill -9 node N
#   tools/galera.sh restart DIR N                  start node N again: it rejoins (IST/SST)
#   tools/galera.sh status DIR                     each node's wsrep state and cluster size
#
# DIR/galera.env holds the ports (NODES=127.0.0.1:p1,...), kept across restarts.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tools/services.sh"

PROVIDER=/usr/lib/galera/libgalera_smm.so
N_NODES=3
# A killed node leaves the cluster's view within about 2 s (defaults: 5-15 s), so a local
# try-out or a spec sees the failure and the rejoin quickly; loopback has no jitter.
EVS="evs.keepalive_period=PT0.5S;evs.inactive_check_period=PT0.5S;evs.suspect_timeout=PT1.5S"
EVS+=";evs.inactive_timeout=PT3S;evs.install_timeout=PT3S"

die() { echo "galera: $*" >&2; exit 1; }

need() {
  [ -f "$PROVIDER" ] || die "$PROVIDER is missing (apt-get install galera-4; tools/deps.sh)"
  command -v rsync >/dev/null || die "rsync is missing (state transfers use it; tools/deps.sh)"
}

# Ports: per node the SQL port, the group port (gcomm), IST and SST; chosen once, free,
# and below the kernel's ephemeral range (32768-), which the nodes' own outgoing
# connections to each other take ports from while one of them is down.
pick_ports() {
  local dir=$1 base=$((12000 + RANDOM % 8000)) i
  : >"$dir/galera.env"
  local nodes="" gcomm=""
  for i in $(seq 1 $N_NODES); do
    local sql grp ist sst
    sql=$(free_port "$base"); grp=$(free_port $((sql + 1))); ist=$(free_port $((grp + 1)))
    sst=$(free_port $((ist + 1))); base=$((sst + 1))
    echo "SQL$i=$sql GRP$i=$grp IST$i=$ist SST$i=$sst" >>"$dir/galera.env"
    nodes+="${nodes:+,}127.0.0.1:$sql"
    gcomm+="${gcomm:+,}127.0.0.1:$grp"
  done
  echo "NODES=$nodes" >>"$dir/galera.env"
  echo "GCOMM=$gcomm" >>"$dir/galera.env"
}

load_env() {
  [ -f "$1/galera.env" ] || die "$1/galera.env is missing: run 'tools/galera.sh start $1' first"
  # shellcheck disable=SC1090
  . <(tr ' ' '\n' <"$1/galera.env")
}

var() { eval "echo \${$1$2}"; }

# Each node's own option file (the SST script reads it too, hence no --no-defaults).
write_cnf() {
  local dir=$1 i=$2 d=$1/node$2
  mkdir -p "$d/data"
  local user_line=""
  [ "$(id -u)" = 0 ] && user_line="user=mysql"
  cat >"$d/my.cnf" <<EOF
[mysqld]
$user_line
datadir=$d/data
socket=$d/mysqld.sock
pid-file=$d/mysqld.pid
log-error=$d/error.log
port=$(var SQL "$i")
bind-address=127.0.0.1
skip-name-resolve
innodb-buffer-pool-size=64M
innodb-log-file-size=16M
character-set-server=utf8mb4
collation-server=utf8mb4_unicode_ci
max-connections=500
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
wsrep_on=ON
wsrep_provider=$PROVIDER
wsrep_cluster_name=chathost_local
wsrep_cluster_address=gcomm://$GCOMM
wsrep_node_name=node$i
wsrep_node_address=127.0.0.1:$(var GRP "$i")
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:$(var GRP "$i");ist.recv_addr=127.0.0.1:$(var IST "$i");gcache.size=64M;$EVS"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:$(var SST "$i")
wsrep_slave_threads=2
# reads wait until the node has applied what the cluster committed before them, so a
# history page read on one node shows a message acked through another
wsrep_sync_wait=1
EOF
}

sock_of() { echo "$1/node$2/mysqld.sock"; }

ping_node() {
  mariadb-admin --no-defaults --protocol=socket --socket="$(sock_of "$1" "$2")" -uroot ping >/dev/null 2>&1
}

# wait_synced DIR N: until node N answers and says wsrep_local_state_comment = Synced (120 s)
wait_synced() {
  local dir=$1 i=$2 t
  for t in $(seq 1 1200); do
    if ping_node "$dir" "$i"; then
      local s
      s=$(mariadb --no-defaults --protocol=socket --socket="$(sock_of "$dir" "$i")" -uroot -N -B \
        -e "SHOW STATUS LIKE 'wsrep_local_state_comment'" 2>/dev/null | cut -f2)
      [ "$s" = Synced ] && return 0
    fi
    if ! kill -0 "$(cat "$dir/node$i/launcher.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
      echo "galera: node $i exited; see $dir/node$i/error.log" >&2
      return 1
    fi
    sleep 0.1
  done
  die "node $i did not reach Synced in 120 s; see $dir/node$i/error.log"
}

# join_node DIR N: starts node N and waits until it is Synced. Tried three times: galera
# 26.4 sometimes aborts a joiner at once ("Failed to read thread schedparams").
join_node() {
  local dir=$1 i=$2 try
  for try in 1 2 3; do
    start_node "$dir" "$i"
    wait_synced "$dir" "$i" && return 0
    echo "galera: starting node $i again (attempt $((try + 1)))" >&2
  done
  die "node $i did not join; see $dir/node$i/error.log"
}

# start_node DIR N [--wsrep-new-cluster]
start_node() {
  local dir=$1 i=$2; shift 2
  mariadbd --defaults-file="$dir/node$i/my.cnf" "$@" >/dev/null 2>&1 &
  echo $! >"$dir/node$i/launcher.pid"
}

cmd_start() {
  local dir=$1; shift
  need
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  pick_ports "$dir"
  load_env "$dir"
  local user_opt=()
  [ "$(id -u)" = 0 ] && user_opt=(--user=mysql)
  for i in $(seq 1 $N_NODES); do write_cnf "$dir" "$i"; done
  if [ "$(id -u)" = 0 ]; then
    chown -R mysql:mysql "$dir"/node*
    setpriv --reuid=mysql --regid=mysql --clear-groups test -w "$dir/node1/data" ||
      die "user mysql cannot reach $dir (make every folder above it searchable: chmod o+x)"
  fi
  # Only node 1 gets a fresh data directory; the others receive it by state transfer.
  mariadb-install-db --no-defaults --force --datadir="$dir/node1/data" "${user_opt[@]}" \
    --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
    >"$dir/node1/install.log" 2>&1 || { cat "$dir/node1/install.log" >&2; exit 1; }
  start_node "$dir" 1 --wsrep-new-cluster
  wait_synced "$dir" 1 || die "node 1 did not start"
  for i in $(seq 2 $N_NODES); do join_node "$dir" "$i"; done
  if [ $# -ge 3 ]; then
    mariadb_setup "$dir/node1" "$1" "$2" "$3"
  fi
  echo "CHATHOST_MYSQL_NODES=$NODES"
}

# node_pid DIR N: the pid of node N if that process is still node N's mariadbd (a pid in the
# file may since belong to another process: pids wrap around at kernel.pid_max), else nothing
node_pid() {
  local pid cnf
  pid=$(cat "$1/node$2/launcher.pid" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  cnf=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 's/^--defaults-file=//p' | head -n 1)
  [ -n "$cnf" ] && [ "$(realpath -m "$cnf")" = "$(realpath -m "$1/node$2/my.cnf")" ] && echo "$pid"
  return 0
}

stop_node() {
  local dir=$1 i=$2 pid
  pid=$(node_pid "$dir" "$i")
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
  local dir=$1 i
  for i in $(seq $N_NODES -1 1); do stop_node "$dir" "$i"; done
}

cmd_kill() {
  local dir=$1 i=$2 pid
  pid=$(node_pid "$dir" "$i")
  [ -n "$pid" ] || die "node $i is not running"
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
}

cmd_restart() {
  local dir=$1 i=$2
  load_env "$dir"
  join_node "$dir" "$i"
}

cmd_status() {
  local dir=$1 i
  for i in $(seq 1 $N_NODES); do
    printf 'node%s ' "$i"
    mariadb --no-defaults --protocol=socket --socket="$(sock_of "$dir" "$i")" -uroot -N -B -e \
      "SHOW STATUS WHERE Variable_name IN ('wsrep_local_state_comment','wsrep_cluster_size')" \
      2>/dev/null | tr '\t\n' '= ' || printf 'down'
    echo
  done
}

[ $# -ge 2 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
cmd=$1; shift
case $cmd in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$1" ;;
  kill) cmd_kill "$1" "$2" ;;
  restart) cmd_restart "$1" "$2" ;;
  status) cmd_status "$1" ;;
  *) die "unknown command '$cmd' (start, stop, kill, restart, status)" ;;
esac

#!/usr/bin/env bash
# tools/run.sh: `make run`. Starts the private Redis and MariaDB under .run/ (data kept
# between runs, ports from config.lua), applies the migrations, then every role whose
# scripts exist (`chathost config roles`) in the foreground, each line prefixed with the
# process's name, and says "up" once every role (and the SMTP sink) listens. A role or
# the sink that does not start is named, everything started is stopped, and the exit
# status is 1. Ctrl-C (SIGINT), SIGTERM or closing its terminal stops the roles, then
# the sink, Redis and MariaDB.
#
# CHATHOST_RUN_TLS=1 (`make run TLS=1`): every role runs with tls_proxy.enabled
# (CHATHOST_TLS_PROXY=1), so clients are told the proxy's addresses, and once they listen
# the TLS proxy starts in front of them (tools/tls_proxy.sh, under .run/tls), with a
# self-signed certificate made there when config.lua names none; it stops first.
#
# While it runs, from another terminal (same CHATHOST_RUN_DIR):
#   tools/run.sh reload        every role reloads its scripts (SIGHUP to run.sh does the same)
#   tools/run.sh restart NAME  stops one role (chat2, gate...) and starts it again with
#                              this run's secrets; exit status 0 once it listens again
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
RUN=${CHATHOST_RUN_DIR:-$ROOT/.run} # another folder (and config) for a second system
. "$ROOT/tools/services.sh"
export CHATHOST_CONFIG=${CHATHOST_CONFIG:-$ROOT/config.lua}
# the resource role keeps its files (avatars, chat images) in the run's folder
export CHATHOST_RESOURCE_DIR=${CHATHOST_RESOURCE_DIR:-$RUN/files}

# ---- the commands for a running system ------------------------------------------------

# running_pid: the pid of the run.sh that owns $RUN, or fails
running_pid() {
  local pid
  pid=$(cat "$RUN/run.pid" 2>/dev/null) && [[ "$(ps -o args= -p "$pid" 2>/dev/null)" == *run.sh* ]] &&
    echo "$pid" && return 0
  echo "run.sh: no 'make run' is up in $RUN" >&2
  return 1
}

case "${1:-}" in
  "") ;;
  reload)
    pid=$(running_pid) || exit 1
    kill -HUP "$pid"
    echo "run.sh: every role reloads its scripts (see the output of 'make run')"
    exit 0 ;;
  restart)
    [ $# -eq 2 ] || { echo "usage: tools/run.sh restart NAME   (a role: gate, verify, status, chat1...)" >&2; exit 2; }
    pid=$(running_pid) || exit 1
    rm -f "$RUN/restart.result"
    echo "$2" >"$RUN/restart.request.tmp" && mv "$RUN/restart.request.tmp" "$RUN/restart.request"
    kill -USR1 "$pid"
    for _ in $(seq 1 600); do # 60 s: a stop (grace_ms) and a start
      if [ -f "$RUN/restart.result" ]; then
        result=$(cat "$RUN/restart.result")
        echo "run.sh: $result"
        [[ "$result" == restarted* ]] && exit 0 || exit 1
      fi
      sleep 0.1
    done
    echo "run.sh: no answer from the 'make run' in $RUN" >&2
    exit 1 ;;
  -h|--help|help)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
  *)
    echo "usage: tools/run.sh [reload | restart NAME]" >&2
    exit 2 ;;
esac

# ---- starting the system --------------------------------------------------------------

mkdir -p "$RUN"
if pid=$(running_pid 2>/dev/null); then
  echo "[run] another 'make run' (pid $pid) is up in $RUN" >&2
  exit 1
fi
# Secrets are generated once, kept out of git (.run/ is ignored) and passed by environment.
if [ ! -f "$RUN/secrets.env" ]; then
  umask 077
  echo "CHATHOST_MYSQL_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$RUN/secrets.env"
  umask 022
fi
# The gRPC secret joins secrets.env files made before it existed.
if ! grep -q '^CHATHOST_GRPC_SECRET=' "$RUN/secrets.env"; then
  echo "CHATHOST_GRPC_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$RUN/secrets.env"
fi
# So does the key that signs the resource server's download URLs.
if ! grep -q '^CHATHOST_RESOURCE_URL_SECRET=' "$RUN/secrets.env"; then
  echo "CHATHOST_RESOURCE_URL_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$RUN/secrets.env"
fi
set -a; . "$RUN/secrets.env"; set +a
TLS=0
if [ "${CHATHOST_RUN_TLS:-}" = 1 ]; then TLS=1; export CHATHOST_TLS_PROXY=1
elif [ -n "${CHATHOST_RUN_TLS:-}" ] && [ "${CHATHOST_RUN_TLS}" != 0 ]; then
  echo "[run] TLS=$CHATHOST_RUN_TLS: expected 1 (or 0)" >&2; exit 2
fi

settings=$("$BIN" config redis.port mysql.port mysql.user mysql.database mail.url) || exit 2
read -r REDIS_PORT MYSQL_PORT MYSQL_USER MYSQL_DB MAIL_URL <<<"$(echo $settings)"

declare -A pid_of role_of # role name (chat2) -> pid, role (chat)
names=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  # neither another signal (a second Ctrl-C, the SIGHUPs of a closing terminal) nor the
  # output going away (a closed terminal, a pipe whose reader is gone) ends it half-way
  set +e
  trap '' INT TERM HUP USR1 PIPE
  echo "[run] stopping..."
  [ "$TLS" = 1 ] && "$ROOT/tools/tls_proxy.sh" stop "$RUN/tls"
  for n in "${names[@]}"; do kill -TERM "${pid_of[$n]}" 2>/dev/null || true; done
  for n in "${names[@]}"; do wait "${pid_of[$n]}" 2>/dev/null || true; done
  if [ -n "${SINK_PID:-}" ]; then kill "$SINK_PID" 2>/dev/null || true; fi
  redis_stop "$RUN/redis"
  mariadb_stop "$RUN/mysql"
  rm -f "$RUN/run.pid" "$RUN/restart.request"
  echo "[run] stopped"
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT
trap '' USR1 # a restart asked for before the system is up is not answered
echo $$ >"$RUN/run.pid"

# listens PID PORT: true when PID, or a child of it (the gate's workers), listens on PORT
listens() {
  local out p
  out=$(ss -Hltnp "sport = :$2" 2>/dev/null) || return 1
  for p in "$1" $(pgrep -P "$1" || true); do [[ "$out" == *"pid=$p,"* ]] && return 0; done
  return 1
}

# await PID PORT...: waits until PID listens on every PORT (0: none); fails if it exits
# first or takes longer than 60 s
await() {
  local pid=$1 port; shift
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || return 1
    local all=1
    for port in "$@"; do [ "$port" = 0 ] || listens "$pid" "$port" || { all=0; break; }; done
    [ "$all" = 1 ] && return 0
    sleep 0.1
  done
  return 1
}

# ports NAME: the ports role NAME listens on, the clients' port first, then gRPC, then
# admin (an admin port of 0 is none)
ports() {
  "$BIN" config ports "$1" | tr '\n' ' '
}

start_role() {
  local name=$1
  # the prefixer ignores Ctrl-C so it prints the role's last lines as it shuts down
  "$BIN" "${role_of[$name]}" --name "$name" > >(trap '' INT HUP; exec sed -u "s/^/[$name] /") 2>&1 &
  pid_of[$name]=$!
  echo "[run] started $name (pid $!)"
}

# await_role NAME: true once the role listens on its ports; else says why it did not start
await_role() {
  local name=$1 pid=${pid_of[$1]} status=0
  # shellcheck disable=SC2046
  await "$pid" $(ports "$name") && return 0
  if kill -0 "$pid" 2>/dev/null; then
    echo "[run] $name did not listen on its ports within 60 s" >&2
  else
    wait "$pid" 2>/dev/null || status=$?
    echo "[run] $name did not start (exit status $status; its lines above say why)" >&2
  fi
  return 1
}

# SIGHUP (`tools/run.sh reload`): every role reloads its scripts; nothing stops. Unless the
# terminal run.sh started in is gone (closed: the kernel took it away before the SIGHUP):
# then everything stops, as it would have.
has_tty() { (: </dev/tty) 2>/dev/null; }
had_tty=0
has_tty && had_tty=1
reload_all() {
  if [ "$had_tty" = 1 ] && ! has_tty; then stop_all; exit 0; fi
  echo "[run] reloading every role"
  for n in "${names[@]}"; do kill -HUP "${pid_of[$n]}" 2>/dev/null || true; done
}

# SIGUSR1 (`tools/run.sh restart NAME`): the role named in restart.request stops and starts
# again (with this run's environment, so its secrets); the outcome goes to restart.result.
restart_requested() {
  local name result
  name=$(cat "$RUN/restart.request" 2>/dev/null || true)
  rm -f "$RUN/restart.request"
  [ -n "$name" ] || return 0
  if [ -z "${role_of[$name]:-}" ]; then
    result="no role named '$name' (running: ${names[*]})"
  else
    echo "[run] restarting $name"
    kill -TERM "${pid_of[$name]}" 2>/dev/null || true
    wait "${pid_of[$name]}" 2>/dev/null || true
    start_role "$name"
    if await_role "$name"; then result="restarted $name (pid ${pid_of[$name]})"
    else result="$name did not start again; see the output of 'make run'"; fi
  fi
  echo "[run] $result"
  echo "$result" >"$RUN/restart.result.tmp" && mv "$RUN/restart.result.tmp" "$RUN/restart.result"
}

port_free "$REDIS_PORT" || { echo "[run] port $REDIS_PORT is taken (is another 'make run' up?)" >&2; exit 1; }
port_free "$MYSQL_PORT" || { echo "[run] port $MYSQL_PORT is taken (is another 'make run' up?)" >&2; exit 1; }
redis_start "$RUN/redis" "$REDIS_PORT"
echo "[run] redis on 127.0.0.1:$REDIS_PORT (data in $RUN/redis)"
mariadb_start "$RUN/mysql" "$MYSQL_PORT"
mariadb_setup "$RUN/mysql" "$MYSQL_DB" "$MYSQL_USER" "$CHATHOST_MYSQL_PASSWORD"
echo "[run] mariadb on 127.0.0.1:$MYSQL_PORT (data in $RUN/mysql)"
"$BIN" migrate 2>&1 | sed -u 's/^/[migrate] /'

# Mail goes to a local sink that keeps every message under .run/mail/new (one file each),
# unless config.lua points mail.url at a real SMTP server.
if [[ "$MAIL_URL" =~ ^smtp://127\.0\.0\.1:([0-9]+)$ ]]; then
  SINK_PORT=${BASH_REMATCH[1]}
  /usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$SINK_PORT" -c aiosmtpd.handlers.Mailbox \
    "$RUN/mail" >"$RUN/smtp-sink.log" 2>&1 &
  SINK_PID=$!
  if ! await "$SINK_PID" "$SINK_PORT"; then
    echo "[run] the SMTP sink did not start on 127.0.0.1:$SINK_PORT: $(tail -n 1 "$RUN/smtp-sink.log")" >&2
    exit 1
  fi
  echo "[run] SMTP sink on 127.0.0.1:$SINK_PORT: mails land in $RUN/mail/new/"
fi

mapfile -t roles < <("$BIN" config roles)
for r in "${roles[@]}"; do
  read -r role name <<<"$r"
  name=${name:-$role}
  names+=("$name")
  role_of[$name]=$role
  start_role "$name"
done
for n in "${names[@]}"; do await_role "$n" || exit 1; done
if [ "$TLS" = 1 ]; then
  # a certificate of the config's, else a self-signed one in the run's folder
  if ! { "$ROOT/tools/tls_proxy.sh" cert "$RUN/tls" && "$ROOT/tools/tls_proxy.sh" start "$RUN/tls"; } 2>&1 |
    sed -u 's/^/[run] /'; then
    echo "[run] the TLS proxy did not start" >&2
    exit 1
  fi
fi

summary() {
  local lines=() name port rpc admin web_url=""
  for name in "${names[@]}"; do
    case "${role_of[$name]}" in
      chat)
        read -r port rpc admin <<<"$(ports "$name")"
        local ws
        ws=$("$BIN" config "chat.instances.$name.ws_port" 2>/dev/null || true)
        [ -z "$ws" ] || [ "$ws" = 0 ] && ws=$("$BIN" config chat.ws_port 2>/dev/null || true)
        local wsl=""
        [ -n "$ws" ] && [ "$ws" != 0 ] && wsl=", WebSocket ws://127.0.0.1:$ws/"
        lines+=("  $name    chat clients on 127.0.0.1:$port$wsl, gRPC $rpc, admin http://127.0.0.1:$admin") ;;
      gate)
        read -r port admin <<<"$(ports "$name")"
        lines+=("  gate     http://127.0.0.1:$port (POST /get_varifycode, /user_register, /reset_pwd, /user_login), admin http://127.0.0.1:$admin")
        # gate.web_dir "" turns the web client off
        [ -n "$("$BIN" config gate.web_dir)" ] && web_url="http://127.0.0.1:$port/" ;;
      resource)
        read -r http port admin <<<"$(ports "$name")"
        lines+=("  resource 127.0.0.1:$port (avatars and images, 6-byte frames; files in $CHATHOST_RESOURCE_DIR), signed downloads http://127.0.0.1:$http, admin http://127.0.0.1:$admin") ;;
      verify|status)
        read -r port admin <<<"$(ports "$name")"
        lines+=("  $name   gRPC 127.0.0.1:$port, admin http://127.0.0.1:$admin") ;;
      *) # a role the config declares
        lines+=("  $name   ports $(ports "$name")(the last: admin)") ;;
    esac
  done
  echo "[run] chathost is up:"
  printf '%s\n' "${lines[@]}"
  echo "  redis    127.0.0.1:$REDIS_PORT    mariadb 127.0.0.1:$MYSQL_PORT    mail: $RUN/mail/new/"
  if [ -f "$ROOT/scripts/client/init.lua" ]; then
    local cfg=""
    [ "$CHATHOST_CONFIG" != "$ROOT/config.lua" ] && cfg=" -c $CHATHOST_CONFIG"
    echo "[run] to chat, run in two other terminals:  $BIN client$cfg"
  fi
  [ -n "$web_url" ] && echo "[run] web client: open $web_url in a browser"
  if [ "$TLS" = 1 ]; then
    echo "[run] through the TLS proxy (a login through it is told these; the plain ports above stay for the Qt and terminal clients):"
    "$ROOT/tools/tls_proxy.sh" urls "$RUN/tls" | sed 's/^/  /'
  fi
  echo "[run] tools/run.sh reload: every role reloads; tools/run.sh restart NAME: one role restarts"
  echo "[run] Ctrl-C stops everything."
}

trap reload_all HUP
trap restart_requested USR1
idle=()
if [ ${#names[@]} -eq 0 ]; then
  echo "[run] no role has scripts yet; Redis and MariaDB are up. Ctrl-C to stop."
  sleep infinity &
  idle=($!)
else
  summary
fi
# Until Ctrl-C: a role that exits is reported (the others go on; `restart` starts it again).
declare -A reported
while [ "$stopping" = 0 ]; do
  live=("${idle[@]}")
  for n in "${names[@]}"; do
    p=${pid_of[$n]}
    if kill -0 "$p" 2>/dev/null; then live+=("$p")
    elif [ -z "${reported[$p]:-}" ]; then reported[$p]=1; echo "[run] $n (pid $p) exited" >&2; fi
  done
  [ ${#live[@]} -gt 0 ] || break
  wait -n "${live[@]}" 2>/dev/null || true # returns early for a trapped signal too
done

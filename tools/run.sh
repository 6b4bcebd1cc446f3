#!/usr/bin/env bash
# tools/run.sh: `make run`. Starts the private Redis and MariaDB under .run/ (data kept
# between runs, ports from config.lua), applies the migrations, then every role whose
# scripts exist (`chathost config roles`) in the foreground, each line prefixed with the
# process's name. Ctrl-C stops the roles, then Redis and MariaDB.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
RUN=${CHATHOST_RUN_DIR:-$ROOT/.run} # another folder (and config) for a second system
. "$ROOT/tools/services.sh"
export CHATHOST_CONFIG=${CHATHOST_CONFIG:-$ROOT/config.lua}

mkdir -p "$RUN"
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
set -a; . "$RUN/secrets.env"; set +a

settings=$("$BIN" config redis.port mysql.port mysql.user mysql.database mail.url) || exit 2
read -r REDIS_PORT MYSQL_PORT MYSQL_USER MYSQL_DB MAIL_URL <<<"$(echo $settings)"

pids=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  echo "[run] stopping..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${SINK_PID:-}" ]; then kill "$SINK_PID" 2>/dev/null || true; fi
  redis_stop "$RUN/redis"
  mariadb_stop "$RUN/mysql"
  echo "[run] stopped"
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

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
  echo "[run] SMTP sink on 127.0.0.1:$SINK_PORT: mails land in $RUN/mail/new/"
fi

mapfile -t roles < <("$BIN" config roles)
for r in "${roles[@]}"; do
  read -r role name <<<"$r"
  name=${name:-$role}
  # the prefixer ignores Ctrl-C so it prints the role's last lines as it shuts down
  "$BIN" "$role" --name "$name" > >(trap '' INT; exec sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
  echo "[run] started $name (pid $!)"
done
# Waits (bounded) until a port accepts connections.
wait_port() { for _ in $(seq 1 100); do port_free "$1" || return 0; sleep 0.1; done; return 1; }

summary() {
  local lines=() role name port admin
  for r in "${roles[@]}"; do
    read -r role name <<<"$r"
    if [ "$role" = chat ]; then
      read -r port rpc admin <<<"$("$BIN" config "chat.instances.$name.port" \
        "chat.instances.$name.rpc_port" "chat.instances.$name.admin_port" | tr '\n' ' ')"
      wait_port "$port" || true
      lines+=("  $name    chat clients on 127.0.0.1:$port, gRPC $rpc, admin http://127.0.0.1:$admin")
    else
      read -r port admin <<<"$("$BIN" config "$role.port" "$role.admin_port" | tr '\n' ' ')"
      wait_port "$port" || true
      if [ "$role" = gate ]; then
        lines+=("  gate     http://127.0.0.1:$port (POST /get_varifycode, /user_register, /reset_pwd, /user_login), admin http://127.0.0.1:$admin")
      else
        lines+=("  $role   gRPC 127.0.0.1:$port, admin http://127.0.0.1:$admin")
      fi
    fi
  done
  echo "[run] chathost is up:"
  printf '%s\n' "${lines[@]}"
  echo "  redis    127.0.0.1:$REDIS_PORT    mariadb 127.0.0.1:$MYSQL_PORT    mail: $RUN/mail/new/"
  if [ -f "$ROOT/scripts/client/init.lua" ]; then
    local cfg=""
    [ "$CHATHOST_CONFIG" != "$ROOT/config.lua" ] && cfg=" -c $CHATHOST_CONFIG"
    echo "[run] to chat, run in two other terminals:  $BIN client$cfg"
  fi
  echo "[run] Ctrl-C stops everything."
}

if [ ${#roles[@]} -eq 0 ]; then
  echo "[run] no role has scripts yet; Redis and MariaDB are up. Ctrl-C to stop."
  sleep infinity &
  pids+=($!)
else
  summary
fi
while [ ${#pids[@]} -gt 0 ]; do
  wait -n "${pids[@]}" 2>/dev/null || true
  [ "$stopping" = 1 ] && break
  live=()
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then live+=("$p"); else echo "[run] process $p exited" >&2; fi
  done
  pids=("${live[@]}")
done

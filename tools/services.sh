# tools/services.sh: start and stop the private Redis and MariaDB that `make run` and
# `make test` use. Sourced by tools/run.sh and tools/test.sh; never touches the system's
# instances (own data directory, loopback only, --no-defaults).

# The clients below talk to the private instances only, whatever the caller's shell says:
# the mariadb clients obey MYSQL_HOST/MYSQL_TCP_PORT/MYSQL_PWD... even with --no-defaults,
# and redis-cli obeys REDISCLI_AUTH.
unset MYSQL_HOST MYSQL_TCP_PORT MYSQL_UNIX_PORT MYSQL_PWD MYSQL_HISTFILE MYSQL_TEST_LOGIN_FILE \
  MARIADB_HOST MARIADB_TCP_PORT MARIADB_UNIX_PORT MARIADB_PWD LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN \
  REDISCLI_AUTH REDISCLI_HISTFILE REDISCLI_RCFILE REDISCLI_CLUSTER_YES

# port_free PORT: true when nothing accepts connections on 127.0.0.1:PORT
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port START: the first free port from START upwards
free_port() {
  local p=$1
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}

# redis_start DIR PORT [PASSWORD]
redis_start() {
  local dir=$1 port=$2 pw=${3:-}
  mkdir -p "$dir"
  local args=(--port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no
              --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log")
  [ -n "$pw" ] && args+=(--requirepass "$pw")
  redis-server "${args[@]}"
  for _ in $(seq 1 100); do
    if [ -n "$pw" ]; then
      REDISCLI_AUTH="$pw" redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && return 0
    else
      redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && return 0
    fi
    sleep 0.05
  done
  echo "redis did not start on port $port; see $dir/redis.log" >&2
  return 1
}

# ours PID DIR: the process PID still is the server started in DIR (its working directory:
# redis runs in --dir, mariadbd in --datadir). Pids wrap at 32768 here and a suite spawns
# thousands of processes: a stale pid file must never make us signal someone else's.
ours() {
  [ -n "$1" ] && [ "$(readlink "/proc/$1/cwd" 2>/dev/null)" = "$(cd "$2" 2>/dev/null && pwd -P)" ]
}

redis_stop() {
  local dir=$1
  [ -f "$dir/redis.pid" ] || return 0
  local pid; pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
  if ours "$pid" "$dir"; then
    kill -CONT "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
  rm -f "$dir/redis.pid"
}

# mariadb_start DIR PORT [MARIADBD_OPTION...]: creates the data directory on first use
mariadb_start() {
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir"
  local user_opt=()
  [ "$(id -u)" = 0 ] && user_opt=(--user=root)
  if [ ! -d "$dir/data/mysql" ]; then
    mariadb-install-db --no-defaults --force --datadir="$dir/data" "${user_opt[@]}" \
      --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
      >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; return 1; }
  fi
  mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/mysqld.sock" \
    --pid-file="$dir/mysqld.pid" --port="$port" --bind-address=127.0.0.1 "${user_opt[@]}" \
    --skip-name-resolve --log-error="$dir/error.log" --innodb-buffer-pool-size=64M \
    --innodb-log-file-size=16M --skip-log-bin --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_unicode_ci --max-connections=500 "$@" >/dev/null 2>&1 &
  for _ in $(seq 1 600); do # 30 s: a loaded machine can be slow to start InnoDB
    mariadb-admin --no-defaults --protocol=socket --socket="$dir/mysqld.sock" -uroot ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "mariadb did not start on port $port; see $dir/error.log" >&2
  return 1
}

# mariadb_setup DIR DATABASE USER PASSWORD [FROM]: creates (or updates) the database and its
# user, who may connect from FROM (a MariaDB host pattern; default 127.0.0.1, e.g.
# '198.18.%' for the other hosts of a network)
mariadb_setup() {
  local dir=$1 db=$2 user=$3 pw=$4 from=${5:-127.0.0.1}
  mariadb --no-defaults --protocol=socket --socket="$dir/mysqld.sock" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$user'@'$from' IDENTIFIED BY '$pw';
ALTER USER '$user'@'$from' IDENTIFIED BY '$pw';
GRANT ALL ON \`$db\`.* TO '$user'@'$from';
SQL
}

mariadb_stop() {
  local dir=$1
  [ -f "$dir/mysqld.pid" ] || return 0
  local pid; pid=$(cat "$dir/mysqld.pid" 2>/dev/null || true)
  if ours "$pid" "$dir/data"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
}

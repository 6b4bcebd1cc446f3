#!/usr/bin/env bash
# tools/test.sh: `make test`. Starts a private Redis and MariaDB on free loopback ports in a
# temporary directory, applies the migrations, runs every spec (or the paths/options given:
# tools/test.sh --filter redis tests/redis_spec.lua), stops the servers, and exits with
# the harness's status.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
. "$ROOT/tools/services.sh"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/chathost-test.XXXXXX")
cleanup() {
  redis_stop "$TMP/redis" || true
  mariadb_stop "$TMP/mysql" || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Random starting points, so two runs started at once rarely race for the same port.
REDIS_PORT=$(free_port $((26000 + RANDOM % 2000)))
MYSQL_PORT=$(free_port $((23000 + RANDOM % 2000)))
MYSQL_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
GRPC_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
URL_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

redis_start "$TMP/redis" "$REDIS_PORT"
# AUTO_INCREMENT as a 3-node Galera cluster hands it out (every third value, this server
# the second of three): no spec may pass only because ids are consecutive numbers.
mariadb_start "$TMP/mysql" "$MYSQL_PORT" --auto-increment-increment=3 --auto-increment-offset=2
mariadb_setup "$TMP/mysql" chathost_test chathost "$MYSQL_PASSWORD"

export CHATHOST_CONFIG="$ROOT/config.lua"
export CHATHOST_REDIS_HOST=127.0.0.1 CHATHOST_REDIS_PORT=$REDIS_PORT CHATHOST_REDIS_PASSWORD=
# the private Redis, even where the shell points chathost at sentinels (tools/sentinel.sh)
export CHATHOST_REDIS_SENTINELS= CHATHOST_REDIS_MASTER_NAME= CHATHOST_REDIS_SENTINEL_PASSWORD=
export CHATHOST_MYSQL_HOST=127.0.0.1 CHATHOST_MYSQL_PORT=$MYSQL_PORT
export CHATHOST_MYSQL_USER=chathost CHATHOST_MYSQL_PASSWORD=$MYSQL_PASSWORD
export CHATHOST_MYSQL_DATABASE=chathost_test
export CHATHOST_GRPC_SECRET=$GRPC_SECRET
export CHATHOST_RESOURCE_URL_SECRET=$URL_SECRET
export CHATHOST_TEST_TMP=$TMP CHATHOST_BIN=$BIN
export CHATHOST_LOG_LEVEL=${CHATHOST_LOG_LEVEL:-warn}

"$BIN" migrate
"$BIN" test "$@"

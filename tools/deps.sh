#!/usr/bin/env bash
# Installs the Debian 12 packages chathost builds and tests with. Idempotent: when every
# package is already installed it only runs dpkg-query and returns in well under a second.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  libluajit-5.1-dev luajit libuv1-dev lua-cjson-dev libhiredis-dev libmariadb-dev
  libprotobuf-c-dev protobuf-c-compiler libgrpc-dev libhttp-parser-dev libsodium-dev
  libcurl4-openssl-dev
  libwslay-dev libssl-dev # WebSocket framing; libcrypto: SHA-1 of its handshake, TLS
  mariadb-server redis-server
  redis-sentinel  # tools/sentinel.sh and tests/redis_sentinel_spec.lua: a master, a replica
                  # and three sentinels on private ports
  python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc python3-aiosmtpd
  tmux
  iproute2 procps # ss, pgrep and ps: tools/run.sh checks that each role listens; ip, tc and
                  # sysctl: tests/netns_spec.lua builds a network of namespaces
  openssl         # tests/grpc_auth_spec.lua makes the certificates of its TLS links
  galera-4 rsync  # tools/galera.sh: a local 3-node Galera cluster (rsync state transfers)
  chromium        # tests/browser_spec.lua drives the web client in headless Chromium
  nginx libnginx-mod-stream # tools/tls_proxy.sh: TLS in front of the roles (https, wss, and
                  # TLS over TCP through the stream module); never the system's instance
)

missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
$SUDO apt-get update -qq
# chathost runs private Redis and MariaDB instances on ports of its own (tools/services.sh)
# and never uses the system's, whether the packages start them or not.
export DEBIAN_FRONTEND=noninteractive
# Installing nginx (or mariadb-server, redis-server) would start the system's service (nginx
# on port 80): a policy-rc.d that refuses every start, made only if there is none and removed
# afterwards, keeps them all stopped. Only tools/tls_proxy.sh's private instances run.
# One install at a time (a `make run` and a `make test` on a fresh machine): a second waits
# here, so it never mistakes the first one's policy-rc.d for the machine's own and then
# installs after the first removed it.
exec 9>"${TMPDIR:-/tmp}/chathost-deps.lock"
flock 9
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# tools/deps.sh: no service starts while it installs\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  made_policy=1
  trap '$SUDO rm -f "$policy"' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ "$made_policy" = 1 ]; then $SUDO rm -f "$policy"; trap - EXIT; fi

#!/usr/bin/env bash
# tools/tls_proxy.sh: nginx terminating TLS in front of every client-facing listener of a
# chathost config (CHATHOST_CONFIG, default config.lua; its tls_proxy section): https to the
# gate (its API and the web client), wss to each chat server's ws_port, TLS over TCP to each
# chat server's port and to the resource channel, https to resource.http_port. A private
# instance under DIR (default .run/tls): its own nginx.conf, pid file, logs and temporary
# folders, on the config's ports. The system's nginx is never started nor used.
#
#   tools/tls_proxy.sh conf [DIR]     writes DIR/nginx.conf and has nginx check it
#   tools/tls_proxy.sh start [DIR]    writes it and starts nginx; exit status 0 once it
#                                     listens on every port
#   tools/tls_proxy.sh reload [DIR]   writes it again and nginx reloads: a renewed certificate
#                                     (same files) or a changed config, no connection dropped
#   tools/tls_proxy.sh stop [DIR]     stops it (its connections are cut)
#   tools/tls_proxy.sh cert [DIR]     a self-signed certificate for tls_proxy.public_host in
#                                     DIR/cert.pem and DIR/key.pem (30 days), unless they
#                                     are there or the config names its own
#   tools/tls_proxy.sh urls [DIR]     the addresses clients use through the proxy
#
# The certificate is tls_proxy.cert_file and key_file (CHATHOST_TLS_CERT_FILE and
# CHATHOST_TLS_KEY_FILE), else DIR/cert.pem and DIR/key.pem. The nginx binary is
# tls_proxy.nginx (CHATHOST_NGINX). README "Security" says what each host's config needs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CHATHOST_BIN:-$ROOT/build/chathost}
export CHATHOST_CONFIG=${CHATHOST_CONFIG:-$ROOT/config.lua}

cmd=${1:-}
DIR=${2:-${CHATHOST_RUN_DIR:-$ROOT/.run}/tls}
case "$cmd" in
  conf|start|reload|stop|cert|urls) ;;
  -h|--help|help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: tools/tls_proxy.sh conf|start|reload|stop|cert|urls [DIR]" >&2; exit 2 ;;
esac
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

say() { echo "tls_proxy: $*" >&2; }

# ---- the config ---------------------------------------------------------------------

# C[key]: every value of the sections the proxy follows, as `chathost config` prints them
declare -A C
load_config() {
  local out line
  out=$("$BIN" config tls_proxy gate chat resource) || exit 2
  while IFS= read -r line; do C[${line%% = *}]=${line#* = }; done <<<"$out"
}
load_config
if [ "${C[tls_proxy.enabled]:-}" != true ] && [ "$cmd" != cert ] && [ "$cmd" != stop ]; then
  # the roles would announce their own addresses, and the proxy's ports are not derived
  say "tls_proxy.enabled is not set in $CHATHOST_CONFIG (or CHATHOST_TLS_PROXY=1 for every role and this)"
  exit 2
fi
NGINX=${C[tls_proxy.nginx]}
PHOST=${C[tls_proxy.public_host]}
CERT=${C[tls_proxy.cert_file]:-$DIR/cert.pem}
KEY=${C[tls_proxy.key_file]:-$DIR/key.pem}

# bracket H: [H] for an IPv6 address (host:port, URLs), else H
bracket() { if [[ "$1" == *:* ]]; then echo "[$1]"; else echo "$1"; fi; }
# upstream H: where the proxy dials a listener bound to H (loopback for a wildcard)
upstream() {
  case "$1" in 0.0.0.0|"") echo 127.0.0.1 ;; ::) echo "[::1]" ;; *) bracket "$1" ;; esac
}
# secs MS [PLUS_S]: MS milliseconds in whole seconds (rounded up), plus PLUS_S
secs() { echo $(( ($1 + 999) / 1000 + ${2:-0} )); }

# instances: the chat instances' names, sorted
instances() {
  local k
  for k in "${!C[@]}"; do [[ "$k" =~ ^chat\.instances\.([^.]+)\.port$ ]] && echo "${BASH_REMATCH[1]}"; done | sort
}

# ---- nginx.conf ---------------------------------------------------------------------

# The TLS settings of both the http and the stream block: TLS 1.2 and 1.3 only, and for
# 1.2 only forward-secret AEAD suites (Mozilla's "intermediate" list), no session tickets
# (their key would never rotate in a long-running instance).
tls_settings() {
  cat <<EOF
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_tickets off;
EOF
}

# limit ZONE N: at most N connections from one client address (0: no cap)
limit() { if [ "$2" -gt 0 ]; then echo "        limit_conn $1 $2;"; fi; }

write_conf() {
  local listen n files
  listen=$(bracket "${C[tls_proxy.host]}")
  local gate_up res_up gate_body res_ip gate_ip hb res_idle
  gate_up="$(upstream "${C[gate.host]}"):${C[gate.port]}"
  res_up=$(upstream "${C[resource.host]}")
  gate_body=${C[gate.max_body_bytes]}
  gate_ip=${C[gate.max_connections_per_ip]}
  res_ip=${C[resource.max_connections_per_ip]}
  hb=$(secs "${C[chat.heartbeat_timeout_ms]}" 10) # a live client is never cut by the proxy
  res_idle=${C[resource.channel_idle_timeout_ms]}
  if [ "$res_idle" = 0 ]; then res_idle=604800; else res_idle=$(secs "$res_idle" 10); fi
  files=$(ulimit -n)
  if [ "$files" = unlimited ] || [ "$files" -gt 65536 ]; then files=65536; fi
  local module=""
  if ! "$NGINX" -V 2>&1 | grep -q -- '--with-stream \|--with-stream$'; then
    local mods
    mods=$("$NGINX" -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2)
    module="load_module ${mods:-/usr/lib/nginx/modules}/ngx_stream_module.so;"
  fi
  mkdir -p "$DIR/tmp"
  {
    cat <<EOF
# Written by tools/tls_proxy.sh from $CHATHOST_CONFIG: edits here are overwritten.
$module
daemon on;
pid $DIR/nginx.pid;
error_log $DIR/error.log warn;
worker_processes 1;
worker_rlimit_nofile $files;
events { worker_connections $((files / 2)); }

http {
    access_log $DIR/access.log;
    server_tokens off;
    client_body_temp_path $DIR/tmp/body;
    proxy_temp_path $DIR/tmp/proxy;
    fastcgi_temp_path $DIR/tmp/fastcgi;
    uwsgi_temp_path $DIR/tmp/uwsgi;
    scgi_temp_path $DIR/tmp/scgi;
    proxy_max_temp_file_size 0; # large downloads stream through, never via disk
$(tls_settings)
    ssl_session_cache shared:chathost_https:10m;
    limit_conn_zone \$binary_remote_addr zone=gate_ip:10m;
    limit_conn_zone \$binary_remote_addr zone=res_http_ip:10m;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }

    # https -> the gate: its HTTP API and the web client. The gate trusts this proxy's
    # X-Forwarded-For (gate.trusted_proxies), so its per-IP limits count the real client.
    server {
        listen $listen:${C[tls_proxy.gate_port]} ssl;
        client_max_body_size $gate_body;     # gate.max_body_bytes: above, 413 here as there
        client_body_buffer_size $gate_body;
$(limit gate_ip "$gate_ip")
        location / {
            proxy_pass http://$gate_up;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header Connection "";
            proxy_read_timeout $(secs "${C[gate.handler_timeout_ms]}" 5);
        }
    }

    # https -> signed downloads (resource.http_port)
    server {
        listen $listen:${C[resource.public_http_port]} ssl;
        client_max_body_size 1k;             # downloads only: GET
$(limit res_http_ip "$res_ip")
        location / {
            proxy_pass http://$res_up:${C[resource.http_port]};
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout $(secs "${C[resource.handler_timeout_ms]}" 5);
        }
    }
EOF
    for n in $(instances); do
      local ws=${C[chat.instances.$n.public_ws_port]:-}
      [ -n "$ws" ] || continue
      local wport=${C[chat.instances.$n.ws_port]:-${C[chat.ws_port]}}
      local h=${C[chat.instances.$n.host]:-${C[chat.host]}}
      cat <<EOF

    # wss -> $n's WebSocket port; the browser's Origin goes through unchanged for the chat
    # server's check (chat.ws_origins), and reads wait as long as the server's heartbeat
    server {
        listen $listen:$ws ssl;
        location / {
            proxy_pass http://$(upstream "$h"):$wport;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout $hb;
            proxy_send_timeout $hb;
        }
    }
EOF
    done
    cat <<EOF
}

stream {
$(tls_settings)
    ssl_session_cache shared:chathost_tls:10m;
    limit_conn_zone \$binary_remote_addr zone=res_ip:10m;
EOF
    for n in $(instances); do
      local h=${C[chat.instances.$n.host]:-${C[chat.host]}}
      cat <<EOF

    # TLS over TCP -> $n's 2+2-byte frames
    server {
        listen $listen:${C[chat.instances.$n.public_port]} ssl;
        proxy_pass $(upstream "$h"):${C[chat.instances.$n.port]};
        proxy_timeout $hb;
    }
EOF
    done
    cat <<EOF

    # TLS over TCP -> the resource channel (6-byte frames), silent between transfers for as
    # long as resource.channel_idle_timeout_ms allows
    server {
        listen $listen:${C[resource.public_port]} ssl;
$(limit res_ip "$res_ip")
        proxy_pass $res_up:${C[resource.port]};
        proxy_timeout $res_idle;
    }
}
EOF
  } >"$DIR/nginx.conf.tmp"
  # reload: the running nginx's file changes only once the new one passed nginx -t
  [ "${1:-}" = checked ] && { "$NGINX" -p "$DIR" -e "$DIR/error.log" -c "$DIR/nginx.conf.tmp" -t -q || return 1; }
  mv "$DIR/nginx.conf.tmp" "$DIR/nginx.conf"
}

# ---- the process ----------------------------------------------------------------------

nginx_cmd() { "$NGINX" -p "$DIR" -e "$DIR/error.log" -c "$DIR/nginx.conf" "$@"; }

# master_pid: the pid in DIR/nginx.pid while that process is still this instance's nginx
# master (a pid left by a kill -9 may since belong to another process), or fails
master_pid() {
  local pid
  pid=$(cat "$DIR/nginx.pid" 2>/dev/null) || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "nginx: master process" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- " -c $DIR/nginx.conf " && echo "$pid"
}

# ports: every port the proxy listens on
ports() {
  local n
  echo "${C[tls_proxy.gate_port]}" "${C[resource.public_http_port]}" "${C[resource.public_port]}"
  for n in $(instances); do
    echo "${C[chat.instances.$n.public_port]}" "${C[chat.instances.$n.public_ws_port]:-}"
  done
}

# listening PID PORT: PID or a child of it listens on PORT
listening() {
  local out p
  out=$(ss -Hltnp "sport = :$2" 2>/dev/null) || return 1
  for p in "$1" $(pgrep -P "$1" || true); do [[ "$out" == *"pid=$p,"* ]] && return 0; done
  return 1
}

check_files() {
  local f
  for f in "$CERT" "$KEY"; do
    [ -r "$f" ] || { say "cannot read $f (tls_proxy.cert_file/key_file, or 'tools/tls_proxy.sh cert $DIR' for a self-signed one)"; exit 1; }
  done
  command -v "$NGINX" >/dev/null || { say "no $NGINX command (tools/deps.sh installs nginx)"; exit 1; }
}

warn_limits() {
  local ip=${C[resource.max_connections_per_ip]}
  [ "$ip" -gt 0 ] && say "note: the resource server sees every proxied connection as the proxy's; resource.max_connections_per_ip ($ip) then caps all its users together: set it to 0 there (the proxy applies it per client)"
  true
}

case "$cmd" in
  conf)
    check_files
    write_conf
    nginx_cmd -t -q || exit 1
    echo "$DIR/nginx.conf" ;;
  start)
    if pid=$(master_pid); then say "already running (pid $pid) in $DIR"; exit 1; fi
    check_files
    write_conf
    nginx_cmd -t -q || exit 1
    nginx_cmd || { say "nginx did not start: $(tail -n 3 "$DIR/error.log" 2>/dev/null)"; exit 1; }
    warn_limits
    for _ in $(seq 1 100); do # 10 s
      pid=$(master_pid) || { sleep 0.1; continue; }
      all=1
      for p in $(ports); do listening "$pid" "$p" || { all=0; break; }; done
      [ "$all" = 1 ] && { echo "tls_proxy: up (pid $pid), config $DIR/nginx.conf"; exit 0; }
      sleep 0.1
    done
    say "nginx did not listen on every port within 10 s: $(tail -n 3 "$DIR/error.log" 2>/dev/null)"
    pid=$(master_pid) && kill -TERM "$pid" 2>/dev/null # not left half up
    exit 1 ;;
  reload)
    pid=$(master_pid) || { say "not running in $DIR"; exit 1; }
    check_files
    write_conf checked || { say "the new configuration fails nginx -t; the running one is unchanged"; exit 1; }
    kill -HUP "$pid"
    echo "tls_proxy: reloading (pid $pid)" ;;
  stop)
    if pid=$(master_pid); then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$DIR/nginx.pid" ;;
  cert)
    [ -f "$CERT" ] && [ -f "$KEY" ] && exit 0
    if [ -n "${C[tls_proxy.cert_file]:-}" ]; then # never written over an operator's path
      say "tls_proxy.cert_file or key_file is missing: $CERT, $KEY"; exit 1
    fi
    if [[ "$PHOST" =~ ^[0-9.]+$ || "$PHOST" == *:* ]]; then san="IP:$PHOST,DNS:localhost"
    else san="DNS:$PHOST"; fi
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj "/CN=$PHOST" -addext "subjectAltName=$san" -keyout "$KEY" -out "$CERT" 2>/dev/null ||
      { say "openssl could not make a certificate"; exit 1; }
    echo "tls_proxy: self-signed certificate for $PHOST in $CERT (browsers will warn)" ;;
  urls)
    h=$(bracket "$PHOST")
    echo "web client and gate https://$h:${C[tls_proxy.gate_port]}/"
    for n in $(instances); do
      ws=${C[chat.instances.$n.public_ws_port]:-}
      echo "$n TLS frames $h:${C[chat.instances.$n.public_port]}${ws:+, wss://$h:$ws/}"
    done
    echo "resource TLS channel $h:${C[resource.public_port]}, downloads https://$h:${C[resource.public_http_port]}" ;;
esac

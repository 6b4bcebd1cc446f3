-- chathost.config: loads config.lua in a sandbox, applies environment overrides, checks
-- every known key against the schema below (filling defaults), and resolves the role's
-- own section as config.self. Errors are one line naming the key: the caller prints them
-- and exits with status 2.
local roles = require "chathost.roles"

local M = {}

-- Each entry: { type, default, min, max } or a nested schema table. `false` default means
-- optional with no default.
local function int(default, min, max) return { "integer", default, min, max } end
local function str(default) return { "string", default } end
local function bool(default) return { "boolean", default } end
local function addresses() return { "addresses", {} } end -- a list of IP addresses
local function port() return int(false, 1, 65535) end         -- optional

-- An IPv4 or IPv6 address (host.ip: parsed by the C library, so "10.0.0.1:80",
-- "010.0.0.1" and names are not)?
local function is_ip(s)
    return type(s) == "string" and require("host").ip(s) ~= nil
end

local SCHEMA = {
    -- where every role listens unless its own section says otherwise (gate, verify, status,
    -- chat and each chat instance: `host`); "0.0.0.0" exposes them all
    bind_host = str("127.0.0.1"),
    log = { level = { "level", "info" } },
    scripts = {
        dir = str("scripts"),
        watch = bool(true),
        reload_debounce_ms = int(20, 0, 60000),
    },
    migrations = {
        dir = str("sql"),                           -- relative to the config file's folder
        -- several mysql.nodes: a migrate that died holding the cluster's lock row
        -- (schema_migrations_lock) is taken over after this long
        lock_stale_s = int(900, 10, 86400),
    },
    redis = {
        host = str("127.0.0.1"), port = int(6380, 1, 65535), password = str(false),
        db = int(0, 0, 255),
        pool_size = int(2, 1, 64),
        connect_timeout_ms = int(1000, 10, 60000),
        command_timeout_ms = int(1000, 10, 600000),
        reconnect_min_ms = int(100, 10, 60000),
        reconnect_max_ms = int(2000, 10, 600000),
        max_pending = int(10000, 1, 10000000),
        -- Sentinel instead of host/port (both or neither): "ip:port" of each sentinel (or one
        -- comma-separated string, as CHATHOST_REDIS_SENTINELS gives it) and the master's name
        sentinels = { "sentinels", false },
        master_name = str(false),
        sentinel_password = str(false),             -- AUTH to the sentinels, if they want one
        sentinel_timeout_ms = int(500, 10, 60000),  -- per sentinel asked: connect, AUTH, answer
    },
    mysql = {
        host = str("127.0.0.1"), port = int(3308, 1, 65535),
        user = str("chathost"), password = str(false), database = str("chathost"),
        pool_size = int(4, 1, 256),
        connect_timeout_s = int(3, 1, 600),
        read_timeout_s = int(10, 1, 3600),
        write_timeout_s = int(10, 1, 3600),
        acquire_timeout_ms = int(2000, 0, 600000),
        max_waiting = int(10000, 0, 10000000),
        stmt_cache = int(64, 1, 4096),
        ping_idle_ms = int(30000, 0, 86400000),
        max_result_bytes = int(67108864, 1024, 4294967295), -- a query returning more fails
        -- several servers (a Galera cluster): { "host:port", ... } instead of host and port;
        -- environment CHATHOST_MYSQL_NODES="host:port,host:port"
        nodes = { "nodes", {} },
        policy = { "policy", "prefer_first" },  -- prefer_first | spread (worker i: node i % n)
        node_retry_ms = int(2000, 10, 3600000), -- a dead node is tried again after this long
        conflict_attempts = int(3, 1, 100),     -- a transaction losing a deadlock or a Galera
                                                -- certification conflict (1213) runs again
    },
    crypto = {
        argon2_opslimit = int(2, 1, 64),
        argon2_memlimit_kib = int(19456, 8, 4194304),
        max_concurrent = int(2, 1, 256),
        max_waiting = int(1000, 0, 1000000),
        wait_timeout_ms = int(5000, 0, 600000),
    },
    file = {
        max_open = int(1024, 1, 1000000), -- host.file's open files per process; beyond: EMFILE
    },
    grpc = {
        deadline_ms = int(2000, 1, 3600000),
        max_message_bytes = int(4194304, 1024, 67108864),
        max_inflight_calls = int(10000, 1, 10000000), -- per server; beyond: RESOURCE_EXHAUSTED
        secret = str(false),        -- every call carries it, every server demands it
                                    -- (UNAUTHENTICATED); environment CHATHOST_GRPC_SECRET
        tls = {                     -- TLS on the links between roles (hosts apart)
            cert_file = str(false), -- PEM: this process's certificate (servers need it) ...
            key_file = str(false),  -- ... and its key
            ca_file = str(false),   -- PEM: the CA of the peers: clients dial TLS, servers
                                    -- then require a client certificate it signed
            target_name = str(false), -- the name in the peers' certificate, if not their address
        },
    },
    mail = {
        url = str("smtp://127.0.0.1:2525"),     -- smtp:// or smtps:// (TLS from the start)
        from = str("chathost <noreply@chathost.local>"),
        user = str(false), password = str(false),
        tls = { "tls", "none" },                -- none | try | starttls (required)
        timeout_ms = int(10000, 100, 600000),
        max_concurrent = int(2, 1, 64),
        max_waiting = int(100, 0, 100000),
    },
    -- host.http.request (the terminal client's way to the gate): libcurl on the loop
    http_client = {
        timeout_ms = int(10000, 1, 3600000),        -- a request's whole deadline (the call's
                                                    -- timeout_ms overrides it): nil, "timeout"
        connect_timeout_ms = int(5000, 1, 600000),  -- TCP and TLS handshake: "connect timeout"
        max_response_bytes = int(16777216, 1, 1073741824), -- a body beyond: "response too large"
        max_redirects = int(5, 0, 50),              -- followed; beyond: "too many redirects";
                                                    -- 0: a 3xx is the result; https never
                                                    -- follows to http
        max_total_connections = int(64, 1, 100000), -- open at once, idle ones included
        max_host_connections = int(8, 1, 100000),   -- to one host:port at once
        max_waiting = int(1000, 0, 1000000),        -- requests waiting for a connection beyond
                                                    -- max_total_connections; more: nil, "busy"
        idle_timeout_s = int(30, 1, 86400),         -- a pooled connection idle longer is closed
        ca_file = str(false),                       -- PEM CA bundle for https (default: the
                                                    -- system's); a call's ca_file overrides it
        insecure = bool(false),                     -- true: no certificate check (logged)
    },
    test = { timeout_ms = int(10000, 1, 3600000) },
    verify = {
        host = str(false), port = int(50051, 1, 65535), admin_port = int(9101, 0, 65535),
        code_ttl_s = int(600, 60, 86400),           -- a verification code lives this long
        resend_interval_s = int(60, 0, 86400),      -- at most one mail per address per interval
        mail_subject = str("Your chathost verification code"),
        -- a mail gets at most what the caller's deadline leaves minus this (to clean up and
        -- answer before the caller gives up)
        reply_margin_ms = int(200, 0, 60000),
    },
    gate = {
        -- the HTTP limits' defaults are also host.http.serve's (host/http_server.c): a
        -- server that leaves a limit out (admin, a declared role) gets the gate's
        host = str(false), port = int(8080, 1, 65535), admin_port = int(9100, 0, 65535),
        workers = int(1, 1, 64),                    -- processes sharing the port (SO_REUSEPORT)
        max_url_bytes = int(8192, 64, 1048576),     -- request target: beyond -> 414
        max_header_bytes = int(16384, 256, 1048576),-- request line + headers: beyond -> 431
        max_body_bytes = int(65536, 0, 67108864),   -- beyond -> 413
        read_timeout_ms = int(10000, 10, 600000),   -- a whole request, from its first byte -> 408
        idle_timeout_ms = int(60000, 10, 3600000),  -- a keep-alive connection with no request
        handler_timeout_ms = int(30000, 10, 600000),-- a route handler's answer -> 504
        max_connections = int(10000, 1, 1000000),   -- beyond: 503 and close
        max_connections_per_ip = int(256, 0, 1000000), -- from one client address (trusted
                                                    -- proxies spared); beyond: 429, 1017; 0: off
        first_byte_timeout_ms = int(5000, 10, 600000), -- a new connection's first request byte
        access_log = bool(true),                    -- one info line per request
        -- the web client's folder (GET / and /web/<name>), relative to the config file's;
        -- "": the gate serves no web client
        web_dir = str("web"),
        web_max_age_s = int(300, 0, 31536000),      -- Cache-Control max-age of its scripts and
                                                    -- styles (index.html: no-cache); 0: no-cache
        -- peers (load balancers, reverse proxies) whose X-Forwarded-For names the client:
        -- the client IP of rate limits and logs is then the rightmost address in it that
        -- is not itself a trusted proxy; anyone else's X-Forwarded-For is ignored
        trusted_proxies = addresses(),
        accounts = {                                -- the account routes (scripts/gate)
            code_max_tries = int(5, 1, 100),        -- wrong codes; the last one deletes the code
            code_ip_limit = int(20, 1, 1000000),    -- code requests per client IP per window
            code_ip_window_s = int(3600, 1, 86400),
            login_email_limit = int(5, 1, 1000000), -- an e-mail's failures (any IP) per window
                                                    -- from which each failure starts a backoff
            login_ip_limit = int(50, 1, 1000000),   -- failed logins per client IP per window
            login_window_s = int(900, 1, 86400),
            -- failed logins per (e-mail, client IP) per window (login_ip_limit: per client IP)
            login_email_ip_limit = int(5, 1, 1000000),
            -- from the login_email_limit-th failure of an e-mail (from any IP) in a window,
            -- the e-mail is refused (1017) for login_email_backoff_s, doubling with each
            -- further failure up to login_email_backoff_max_s: slowed down, never locked out
            login_email_backoff_s = int(1, 1, 3600),
            login_email_backoff_max_s = int(60, 1, 3600),
            login_wait_ms = int(5000, 0, 600000),   -- waiting for logins in flight; then 1018
            -- registrations and resets that hash a password, per client IP per window
            -- (then 1017), and per code (then 1003)
            hash_ip_limit = int(20, 1, 1000000),
            hash_ip_window_s = int(3600, 1, 86400),
            code_max_hashes = int(3, 1, 100),
            rehash_on_login = bool(true),           -- re-hash passwords made with other costs
            verify_target = str(false),             -- host:port; default verify.host:port
            status_target = str(false),             -- host:port; default status.host:port
            rpc_timeout_ms = int(false, 1, 3600000),-- gRPC deadline; default grpc.deadline_ms
        },
    },
    admin = { host = str("127.0.0.1") },            -- every role's /healthz and /metrics listener
    shutdown = { grace_ms = int(3000, 0, 600000) }, -- stop hooks (host.on_stop) get this long
    chat = {
        -- shared by every chat instance (an instance sets its own host, public_host, port,
        -- rpc_port and admin_port)
        host = str(false),                          -- bind address of the client port
        public_host = str(false),                   -- announced to clients; default: host
        heartbeat_timeout_ms = int(60000, 100, 3600000), -- a silent connection is closed
        max_body_bytes = int(8192, 64, 65535),      -- a bigger frame: 1016 and close
        send_queue_bytes = int(1048576, 4096, 1073741824), -- per connection; beyond: closed
        send_queue_frames = int(1000, 1, 1000000),
        max_connections = int(200000, 1, 10000000), -- lowered to the open-file limit minus
        fd_reserve = int(256, 16, 100000),          -- this reserve (pools, gRPC, files)
        login_timeout_ms = int(10000, 100, 600000), -- a connection not logged in by then: closed
        page_size = int(50, 1, 1000),               -- 1025/1029 paging
        presence_ttl_s = int(120, 5, 86400),        -- uip_/usession_, refreshed by heartbeats
        alive_ttl_s = int(15, 2, 3600),             -- the liveness key status reads
        report_interval_ms = int(5000, 100, 600000),-- logincount and liveness refresh
        lock_ttl_ms = int(10000, 100, 600000),      -- per-user login lock
        lock_wait_ms = int(3000, 0, 600000),        -- then 1018
        login_concurrency = int(32, 1, 100000),     -- logins in progress at once; more wait
        login_wait_ms = int(20000, 0, 600000),      -- for their turn, then 1018
        text_max_items = int(32, 1, 1000),
        text_max_bytes = int(4096, 1, 65000),
        batch_window_ms = int(1, 0, 1000),          -- group commit of chat messages
        batch_max = int(64, 1, 10000),
        dedupe_window_s = int(86400, 0, 31536000),  -- a 1017 resent this long after is a resend
        kick_timeout_ms = int(1000, 10, 600000),    -- NotifyKickUser deadline
        handler_timeout_ms = int(30000, 100, 3600000), -- a message's handler: cancelled, 1019
        push_timeout_ms = int(2000, 10, 600000),    -- pushes through a peer chat server
        push_queue_max = int(2, 1, 1000000),        -- pushes waiting per session and peer server
        push_batch_window_ms = int(0, 0, 1000),     -- pushes to one peer gathered into one call
        push_batch_max = int(256, 1, 100000),       -- pushes per NotifyBatch call (or link frame)
        push_link = bool(true),                     -- pushes to peers over a long-lived TCP
                                                    -- link to their client port (not with grpc.tls)
        push_link_window = int(8, 1, 10000),        -- its batches sent and not yet answered
        location_cache_ms = int(1000, 0, 60000),       -- a receiver's uip_ reused by pushes; 0: read each
        apply_list_max = int(100, 0, 100000),       -- applications in the 1006 reply
        friend_list_max = int(1000, 0, 1000000),    -- friends in the 1006 reply (then cut to fit)
        group_max_members = int(500, 2, 100000),    -- members of one group (1061/1063: 1016)
        group_max_per_user = int(200, 1, 100000),   -- groups one user is in (1061/1063: 1016)
        group_name_max_bytes = int(64, 1, 255),     -- a group's name (1061/1079: 1016)
        group_cache_max = int(10000, 1, 10000000),  -- groups whose member list a server caches
        unread_count_max = int(999, 1, 1000000),    -- unread counts in 1026 stop counting here
        -- WebSocket transport (docs/protocol.md §5.5): an instance's ws_port, 0 = off
        ws_port = int(0, 0, 65535),
        ws_origins = { "origins", false },          -- Origin allow-list; default: the gate's
        ws_max_message_bytes = int(16384, 64, 16777216), -- a bigger message: close 1009
        ws_ping_interval_ms = int(20000, 0, 3600000),   -- server pings; 0: none
        ws_handshake_timeout_ms = int(5000, 100, 600000), -- upgrade request complete by then
        ws_handshake_max_bytes = int(8192, 256, 65536),   -- upgrade request size: beyond, 431
        instances = { "map", {
            host = str(false), public_host = str(false),
            port = int(8090, 1, 65535), rpc_port = int(50055, 1, 65535),
            admin_port = int(0, 0, 65535), ws_port = int(false, 0, 65535), -- default: chat.ws_port
            -- the TLS proxy's ports for this instance's port and ws_port (tls_proxy.enabled
            -- only; default port + tls_proxy.port_offset): told to clients that came through it
            public_port = port(), public_ws_port = port(),
        } },
    },
    client = {                                      -- `chathost client`
        gate_url = str(false),                      -- default: this config's gate
        heartbeat_ms = int(10000, 100, 600000),     -- 1023 to the chat server
        http_timeout_ms = int(5000, 100, 600000),
        ca_file = str(false),                       -- PEM CA of an https gate_url's certificate
                                                    -- (default: http_client.ca_file, system's)
        retry_min_ms = int(200, 10, 600000),        -- network failures: backoff from..to
        retry_max_ms = int(5000, 10, 600000),
        retry_attempts = int(5, 1, 100),            -- tries of one request
        reconnect_attempts = int(10, 0, 1000),      -- logins after a lost chat connection
        connect_timeout_ms = int(5000, 100, 600000),-- TCP connect to the chat server
        request_timeout_ms = int(10000, 100, 600000),-- a chat request without its reply fails
        line_max_bytes = int(65536, 16, 16777216),  -- a typed line longer than this is refused
                                                    -- whole (what is beyond is not kept)
    },
    -- roles declared here (host/lua/roles.lua has the built-in ones): roles.NAME runs as
    -- `chathost NAME` with scripts/NAME/init.lua, serving its gRPC methods on grpc_port, its
    -- routes on http_port, its messages on chat_port (each only if set); this section is
    -- its host.config.self
    roles = { "map", {
        host = str(false),                          -- default: bind_host
        grpc_port = port(), http_port = port(), chat_port = port(),
        admin_port = int(0, 0, 65535),              -- /healthz and /metrics; 0: none
        stores = { "stores", {} },                  -- what /healthz checks: "redis", "mysql"
        settings = { "table", {} },                 -- free-form, for the role's scripts
    } },
    -- the resource role (scripts/resource, docs/protocol.md §13): avatars and chat images
    -- over the Season 2 resource channel ([id u16][len u32][JSON] frames)
    resource = {
        host = str(false),                          -- bind address; default bind_host
        public_host = str(false),                   -- what the gate's login reply names
                                                    -- (reshost); default host (loopback for a
                                                    -- wildcard)
        port = int(8093, 1, 65535),                 -- the resource channel (resport)
        http_port = int(8094, 1, 65535),            -- GET /files/<id>, /avatars/<name>
        -- the TLS proxy's ports for port and http_port (tls_proxy.enabled only; default
        -- port + tls_proxy.port_offset): resport through it, the signed URLs' base (https)
        public_port = port(), public_http_port = port(),
        admin_port = int(9112, 0, 65535),
        url_secret = str(false),                    -- HMAC key of signed URLs (>= 16 chars);
                                                    -- environment CHATHOST_RESOURCE_URL_SECRET
        url_ttl_s = int(300, 1, 86400),             -- a signed URL (1050) is valid this long
        dir = str(false),                           -- storage root; default <run dir>/files
                                                    -- (CHATHOST_RESOURCE_DIR, else .run/files
                                                    -- beside the config file)
        max_file_bytes = int(10485760, 1, 1099511627776), -- one file; beyond: 1101
        image_types = { "image_types", { "png", "jpeg", "gif", "webp", "bmp" } }, -- by content
        quota_bytes = int(104857600, 0, 1099511627776), -- per user, uploads kept or running
        max_uploads = int(8, 1, 100000),            -- unfinished uploads per user at once
        upload_ttl_s = int(3600, 1, 2592000),       -- an upload with no chunk this long expires
        sweep_interval_ms = int(10000, 10, 3600000),-- the expiry sweeper's tick
        sweep_batch = int(100, 1, 100000),          -- uploads expired per tick at most
        rename_grace_ms = int(60000, 0, 3600000),   -- an object stored before BLAKE3 keeps
                                                    -- its old name this long after its rows
                                                    -- take the new one (readers under way)
        session_recheck_ms = int(10000, 0, 3600000),-- a bound connection's chat session (and
                                                    -- its kept upload row) is checked again
                                                    -- after this (0: every request)
        max_chunks_in_flight = int(8, 1, 1024),     -- a connection's chunks written and tallied
                                                    -- at once; the next waits for them all
        pool_threads = int(2, 1, 128),              -- libuv's pool: opens, fsyncs, reads the
                                                    -- page cache does not hold, hashes; more on
                                                    -- a disk whose fsync is slow
        write_threads = int(1, 1, 64),              -- the threads that write the chunks (a
                                                    -- file's writes one at a time, in order)
        write_spin_us = int(100, 0, 10000),         -- a writer out of work spins this long
                                                    -- before it sleeps (0: sleeps at once)
        max_body_bytes = int(65536, 1024, 16777216),-- one frame (a 32 KiB chunk is ~44 KB)
        channel_idle_timeout_ms = int(43200000, 0, 604800000), -- a silent connection: closed;
                                                    -- 0: never (the S2 client sends nothing
                                                    -- between transfers and logs out on a close)
        max_connections = int(100000, 1, 10000000), -- lowered to the open-file limit - reserve
        max_connections_per_ip = int(256, 0, 1000000), -- from one client address (channel and
                                                    -- HTTP each); beyond: closed; 0: no cap
        handler_timeout_ms = int(30000, 100, 3600000), -- one request; then 1019
        send_queue_bytes = int(4194304, 65536, 1073741824), -- per connection; beyond: closed
    },
    -- nginx in front of every client-facing listener (tools/tls_proxy.sh, docs/protocol.md
    -- §5.6): https to the gate, wss to each chat server's ws_port, TLS over TCP to each chat
    -- server's port and the resource channel, https to resource.http_port. Enabled, a login
    -- through it is told the proxy's addresses (wss://), and the signed URLs are https://
    tls_proxy = {
        enabled = bool(false),                      -- environment CHATHOST_TLS_PROXY=1
        host = str(false),                          -- where nginx listens; default bind_host
        public_host = str(false),                   -- the name clients dial (the certificate's);
                                                    -- default host (loopback for a wildcard)
        port_offset = int(10000, 0, 60000),         -- a proxied listener's port: the role's port
                                                    -- plus this, unless its public_*port is set
        gate_port = int(false, 1, 65535),           -- https to the gate; default gate.port + offset
        cert_file = str(false),                     -- PEM certificate chain, and its key: environment
        key_file = str(false),                      -- CHATHOST_TLS_CERT_FILE, CHATHOST_TLS_KEY_FILE
        nginx = str("nginx"),                       -- the nginx binary (environment CHATHOST_NGINX)
    },
    status = {
        host = str(false), port = int(50052, 1, 65535), admin_port = int(9102, 0, 65535),
        token_ttl_s = int(60, 5, 86400),            -- an unused chat login token (utoken_<uid>)
                                                    -- lives this long; a login uses it up
        servers_refresh_ms = int(100, 0, 10000),    -- how stale the view of chat servers may be
        probe_interval_ms = int(1000, 0, 600000),   -- TCP probe of each live chat server; 0: off
                                                    -- (a tick is skipped while one runs)
        probe_timeout_ms = int(500, 10, 60000),     -- a probe not connected by then: unreachable
    },
}

-- Environment variables that override config values (tests, containers).
local ENV = {
    CHATHOST_REDIS_HOST = { "redis", "host" }, CHATHOST_REDIS_PORT = { "redis", "port" },
    CHATHOST_REDIS_PASSWORD = { "redis", "password" },
    CHATHOST_REDIS_SENTINELS = { "redis", "sentinels" },
    CHATHOST_REDIS_MASTER_NAME = { "redis", "master_name" },
    CHATHOST_REDIS_SENTINEL_PASSWORD = { "redis", "sentinel_password" },
    CHATHOST_MYSQL_HOST = { "mysql", "host" }, CHATHOST_MYSQL_PORT = { "mysql", "port" },
    CHATHOST_MYSQL_USER = { "mysql", "user" }, CHATHOST_MYSQL_PASSWORD = { "mysql", "password" },
    CHATHOST_MYSQL_DATABASE = { "mysql", "database" },
    CHATHOST_MYSQL_NODES = { "mysql", "nodes" },
    CHATHOST_LOG_LEVEL = { "log", "level" },
    CHATHOST_GRPC_SECRET = { "grpc", "secret" },
    CHATHOST_RESOURCE_URL_SECRET = { "resource", "url_secret" },
    CHATHOST_MAIL_URL = { "mail", "url" },
    CHATHOST_MAIL_USER = { "mail", "user" }, CHATHOST_MAIL_PASSWORD = { "mail", "password" },
    CHATHOST_RESOURCE_DIR = { "resource", "dir" },
    CHATHOST_TLS_PROXY = { "tls_proxy", "enabled" },
    CHATHOST_TLS_CERT_FILE = { "tls_proxy", "cert_file" },
    CHATHOST_TLS_KEY_FILE = { "tls_proxy", "key_file" },
    CHATHOST_NGINX = { "tls_proxy", "nginx" },
}

-- The image types the resource role tells by their first bytes (scripts/lib/store.lua).
local IMAGE_TYPES = { png = true, jpeg = true, gif = true, webp = true, bmp = true }

local LEVELS = { debug = true, info = true, warn = true, error = true, off = true }

local function check(path, spec, v)
    local kind, default, min, max = spec[1], spec[2], spec[3], spec[4]
    if v == nil then
        if default == false then return nil end
        return default
    end
    if kind == "integer" then
        if type(v) == "string" and v:match("^%-?%d+$") then v = tonumber(v) end
        if type(v) ~= "number" or v ~= math.floor(v) then
            error(("%s: expected an integer, got %s"):format(path, tostring(v)), 0)
        end
        if (min and v < min) or (max and v > max) then
            error(("%s: %d is out of range %d..%d"):format(path, v, min, max), 0)
        end
    elseif kind == "boolean" and type(v) == "string" then -- from the environment
        if v == "1" or v == "true" then v = true
        elseif v == "0" or v == "false" then v = false
        else error(("%s: expected 1, 0, true or false, got %s"):format(path, v), 0) end
    elseif kind == "table" then
        if type(v) ~= "table" then error(("%s: expected a table"):format(path), 0) end
    elseif kind == "tls" then
        if v ~= "none" and v ~= "try" and v ~= "starttls" then
            error(("%s: expected none, try or starttls, got %s"):format(path, tostring(v)), 0)
        end
    elseif kind == "origins" then
        if type(v) ~= "table" then error(("%s: expected a list of origins"):format(path), 0) end
        for k, o in pairs(v) do
            if type(k) ~= "number" or k < 1 or k > #v or k ~= math.floor(k) then
                error(("%s: expected a list of origins"):format(path), 0)
            end
            if o ~= "*" and (type(o) ~= "string" or not o:match("^https?://[^/%s]+$")) then
                error(("%s[%d]: %s is not an origin (scheme://host[:port], or \"*\")")
                    :format(path, k, tostring(o)), 0)
            end
        end
    elseif kind == "addresses" then
        if type(v) ~= "table" then error(("%s: expected a list of IP addresses"):format(path), 0) end
        for k, a in pairs(v) do
            if type(k) ~= "number" or k < 1 or k > #v or k ~= math.floor(k) then
                error(("%s: expected a list of IP addresses"):format(path), 0)
            end
            if not is_ip(a) then
                error(("%s[%d]: %s is not an IP address"):format(path, k, tostring(a)), 0)
            end
        end
    elseif kind == "stores" then
        if type(v) ~= "table" then error(("%s: expected a list of redis, mysql"):format(path), 0) end
        for k, name in pairs(v) do
            if type(k) ~= "number" or (name ~= "redis" and name ~= "mysql") then
                error(("%s: expected a list of redis, mysql, got %s"):format(path, tostring(name)), 0)
            end
        end
    elseif kind == "nodes" then
        if type(v) == "string" then -- the environment's "host:port,host:port"
            local list = {}
            for entry in v:gmatch("[^,]+") do list[#list + 1] = entry:match("^%s*(.-)%s*$") end
            v = list
        end
        if type(v) ~= "table" then error(("%s: expected a list of \"host:port\""):format(path), 0) end
        for k, a in pairs(v) do
            if type(k) ~= "number" or k < 1 or k > #v or k ~= math.floor(k) then
                error(("%s: expected a list of \"host:port\""):format(path), 0)
            end
            local h, p = tostring(a):match("^(.+):(%d+)$")
            if type(a) ~= "string" or not h or tonumber(p) < 1 or tonumber(p) > 65535 then
                error(("%s[%d]: %s is not host:port"):format(path, k, tostring(a)), 0)
            end
        end
    elseif kind == "policy" then
        if v ~= "prefer_first" and v ~= "spread" then
            error(("%s: expected prefer_first or spread, got %s"):format(path, tostring(v)), 0)
        end
    elseif kind == "image_types" then
        if type(v) ~= "table" or #v == 0 then
            error(("%s: expected a list of png, jpeg, gif, webp, bmp"):format(path), 0)
        end
        for k, name in pairs(v) do
            if type(k) ~= "number" or not IMAGE_TYPES[name] then
                error(("%s: expected a list of png, jpeg, gif, webp, bmp, got %s"):format(path,
                    tostring(name)), 0)
            end
        end
    elseif kind == "sentinels" then
        if type(v) == "string" then -- from the environment: "ip:port,ip:port"
            local list = {}
            for a in v:gmatch("[^,%s]+") do list[#list + 1] = a end
            v = list
        end
        if type(v) ~= "table" then error(("%s: expected a list of \"ip:port\""):format(path), 0) end
        for k, a in pairs(v) do
            if type(k) ~= "number" or k < 1 or k > #v or k ~= math.floor(k) then
                error(("%s: expected a list of \"ip:port\""):format(path), 0)
            end
            local h, p = tostring(a):match("^(.+):(%d+)$")
            local ipv4 = h == "localhost" or (h and h:match("^%d+%.%d+%.%d+%.%d+$") and is_ip(h))
            if type(a) ~= "string" or not ipv4 or tonumber(p) < 1 or tonumber(p) > 65535 then
                error(("%s[%d]: %s is not an IPv4 address and a port (\"127.0.0.1:26379\"; " ..
                    "names are not resolved)"):format(path, k, tostring(a)), 0)
            end
        end
        if #v > 16 then error(("%s: at most 16 sentinels"):format(path), 0) end
    elseif kind == "level" then
        if not LEVELS[v] then
            error(("%s: expected debug, info, warn, error or off, got %s"):format(path, tostring(v)), 0)
        end
    elseif type(v) ~= kind then
        error(("%s: expected a %s, got %s"):format(path, kind, type(v)), 0)
    end
    return v
end

-- Edit distance (insertions, deletions, substitutions) between two short strings.
local function distance(a, b)
    local prev = {}
    for j = 0, #b do prev[j] = j end
    for i = 1, #a do
        local cur = { [0] = i }
        for j = 1, #b do
            local cost = a:byte(i) == b:byte(j) and 0 or 1
            cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        end
        prev = cur
    end
    return prev[#b]
end

-- The known key nearest to a misspelt one (ties: alphabetical order).
local function nearest(key, schema)
    local best, best_d
    local names = {}
    for k in pairs(schema) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
        local d = distance(key, k)
        if not best_d or d < best_d then best, best_d = k, d end
    end
    return best
end

local function apply_schema(tbl, schema, prefix)
    for k in pairs(tbl) do
        if schema[k] == nil then
            local hint = type(k) == "string" and nearest(k, schema)
            error(("%s%s: unknown setting%s"):format(prefix, tostring(k),
                hint and (" (nearest known: " .. prefix .. hint .. ")") or ""), 0)
        end
    end
    for k, spec in pairs(schema) do
        local path = prefix .. k
        if spec[1] == nil then -- nested section
            local sub = tbl[k]
            if sub == nil then sub = {} tbl[k] = sub end
            if type(sub) ~= "table" then error(path .. ": expected a table", 0) end
            apply_schema(sub, spec, path .. ".")
        elseif spec[1] == "map" then -- name -> section, each checked against spec[2]
            local map = tbl[k]
            if map == nil then map = {} tbl[k] = map end
            if type(map) ~= "table" then error(path .. ": expected a table", 0) end
            for name, sub in pairs(map) do
                if type(sub) ~= "table" then error(path .. "." .. tostring(name) .. ": expected a table", 0) end
                apply_schema(sub, spec[2], path .. "." .. tostring(name) .. ".")
            end
        else
            tbl[k] = check(path, spec, tbl[k])
        end
    end
end

local function load_file(path)
    local env = {
        env = function(name, default)
            local v = os.getenv(name)
            if v == nil or v == "" then return default end
            return v
        end,
        tonumber = tonumber, tostring = tostring, string = string, math = math,
        table = table, pairs = pairs, ipairs = ipairs, type = type,
    }
    local f, err = loadfile(path)
    if not f then
        if err:find("No such file", 1, true) or err:find("cannot open", 1, true) then
            error(path .. ": no such file", 0)
        end
        error(err, 0)
    end
    setfenv(f, env)
    local ok, cfg = pcall(f)
    if not ok then error(tostring(cfg), 0) end
    if type(cfg) ~= "table" then error(path .. ": must return a table", 0) end
    return cfg
end

local function apply_env(cfg)
    for var, where in pairs(ENV) do
        local v = os.getenv(var)
        if v and v ~= "" then
            local section = cfg[where[1]]
            if section == nil then section = {} cfg[where[1]] = section end
            if type(section) == "table" then section[where[2]] = v end
        end
    end
end

-- The role's own section (roles.lua names it): config[role] or config.roles[role], and
-- for a role with instances (chat) the shared settings merged with instances[name].
local function resolve_self(cfg, role, name)
    local entry, section = roles.get(cfg, role)
    if not entry then return {} end
    if section ~= nil and type(section) ~= "table" then error(role .. ": expected a table", 0) end
    section = section or {}
    local instances = section.instances
    if not entry.instances or instances == nil then return section end
    if type(instances) ~= "table" then error(role .. ".instances: expected a table", 0) end
    local own = instances[name]
    if own == nil then
        local known = {}
        for k in pairs(instances) do known[#known + 1] = k end
        table.sort(known)
        error(("%s.instances.%s: no such instance (known: %s)"):format(role, tostring(name),
            table.concat(known, ", ")), 0)
    end
    local merged = {}
    for k, v in pairs(section) do if k ~= "instances" then merged[k] = v end end
    for k, v in pairs(own) do merged[k] = v end
    merged.name = name
    if merged.public_host == nil then
        merged.public_host = merged.host == "0.0.0.0" and "127.0.0.1" or merged.host
    end
    return merged
end

-- grpc.tls is all or nothing for a process: a certificate needs its key, and clients with
-- the same config dial TLS exactly when they have the CA, so the CA and the certificate go
-- together (either alone, every call between roles would fail). The files must be
-- readable now, in every role (the gate only dials: it would fail each login later).
local function check_tls(cfg)
    local t = cfg.grpc.tls
    if (t.cert_file == nil) ~= (t.key_file == nil) then
        error("grpc.tls: cert_file and key_file go together", 0)
    end
    if (t.cert_file == nil) ~= (t.ca_file == nil) then
        error("grpc.tls: ca_file and cert_file go together (clients dial TLS only with the CA, "
            .. "servers serve it only with a certificate)", 0)
    end
    for _, key in ipairs({ "cert_file", "key_file", "ca_file" }) do
        local f = t[key] and io.open(t[key], "rb")
        if t[key] and not f then error(("grpc.tls.%s: cannot read %s"):format(key, t[key]), 0) end
        if f then f:close() end
    end
end

-- The proxy's certificate needs its key (the files themselves are tools/tls_proxy.sh's to
-- read: the roles never do, and may run on hosts without them).
local function check_tls_proxy(cfg)
    local t = cfg.tls_proxy
    if (t.cert_file == nil) ~= (t.key_file == nil) then
        error("tls_proxy: cert_file and key_file go together", 0)
    end
end

-- Sentinel mode needs both the sentinels and the master's name: one alone is a mistake.
local function check_sentinel(cfg)
    local r = cfg.redis
    local has_list = r.sentinels ~= nil and #r.sentinels > 0
    if has_list and not r.master_name then
        error("redis.sentinels: needs redis.master_name (the name the sentinels monitor)", 0)
    elseif r.master_name and not has_list then
        error("redis.master_name: needs redis.sentinels", 0)
    elseif r.master_name and not r.master_name:match("^[%w._:-]+$") or
        (r.master_name and #r.master_name > 63) then
        error(("redis.master_name: %q is not a name (letters, digits, . _ : -, " ..
            "at most 63)"):format(r.master_name), 0)
    end
end

-- A secret that is set must be worth the name: an empty one would turn the check off.
local MIN_SECRET = 16
local function check_secret(cfg)
    for _, key in ipairs({ { "grpc", "secret" }, { "resource", "url_secret" } }) do
        local s = cfg[key[1]][key[2]]
        if s ~= nil and #s < MIN_SECRET then
            error(("%s.%s: %d characters, at least %d (or leave it unset)"):format(key[1],
                key[2], #s, MIN_SECRET), 0)
        end
    end
end

-- Deadlines along one request nest (the callee gives up first): verify keeps
-- verify.reply_margin_ms of its caller's deadline to answer after a failed mail, so the
-- gate's deadline for verify must be longer, or no mail could ever be sent.
local function check_nesting(cfg)
    local key = cfg.gate.accounts.rpc_timeout_ms and "gate.accounts.rpc_timeout_ms"
        or "grpc.deadline_ms"
    local gate_ms = cfg.gate.accounts.rpc_timeout_ms or cfg.grpc.deadline_ms
    local margin = cfg.verify.reply_margin_ms
    if gate_ms <= margin then
        error(("%s: %d ms leaves verify no time to send a mail (verify.reply_margin_ms is %d)")
            :format(key, gate_ms, margin), 0)
    end
end

local WILDCARD = { ["0.0.0.0"] = true, ["::"] = true, [""] = true }

-- "[h]" for an IPv6 address (in a URL or host:port), else h.
local function bracket(h)
    return h:find(":", 1, true) and "[" .. h .. "]" or h
end

-- The TLS proxy's host and name, and with tls_proxy.enabled its ports: each listener's
-- port + port_offset unless its public_*port says otherwise. Behind the proxy, a gate on
-- loopback can only be
-- reached through a proxy on this host, so that proxy (127.0.0.1) is its trusted proxy
-- unless gate.trusted_proxies names others: per-IP limits then see the real client.
local function derive_public(cfg)
    local tp = cfg.tls_proxy
    if tp.host == nil then tp.host = cfg.bind_host end
    if tp.public_host == nil then tp.public_host = WILDCARD[tp.host] and "127.0.0.1" or tp.host end
    if not tp.enabled then return end
    local off = tp.port_offset
    local function shift(what, p)
        if p + off > 65535 then
            error(("tls_proxy.port_offset: %s %d + %d is beyond 65535 (set its public port)")
                :format(what, p, off), 0)
        end
        return p + off
    end
    for name, inst in pairs(cfg.chat.instances) do
        local what = "chat.instances." .. tostring(name)
        inst.public_port = inst.public_port or shift(what .. ".port", inst.port)
        local ws = inst.ws_port or cfg.chat.ws_port
        if ws > 0 then inst.public_ws_port = inst.public_ws_port or shift(what .. ".ws_port", ws) end
    end
    local res = cfg.resource
    res.public_port = res.public_port or shift("resource.port", res.port)
    res.public_http_port = res.public_http_port or shift("resource.http_port", res.http_port)
    tp.gate_port = tp.gate_port or shift("gate.port", cfg.gate.port)
    local g = cfg.gate
    if #g.trusted_proxies == 0 and (g.host == "127.0.0.1" or g.host == "::1") then
        g.trusted_proxies = { g.host }
    end
end

-- Defaults that follow other settings: every role's host is bind_host (the resource
-- server's too, and what it announces is its host, loopback for a wildcard), and the
-- client's gate is this config's own gate (loopback when the gate binds a wildcard).
local function derive(cfg)
    for _, role in ipairs(roles.names(cfg)) do
        local _, section = roles.get(cfg, role)
        if section.host == nil then section.host = cfg.bind_host end
    end
    local res = cfg.resource
    if res.host == nil then res.host = cfg.bind_host end
    if res.public_host == nil then
        res.public_host = WILDCARD[res.host] and "127.0.0.1" or res.host
    end
    derive_public(cfg)
    if cfg.chat.ws_origins == nil then -- the pages the gate serves, as a browser names them
        local list = {}
        local function add(scheme, h, port)
            if WILDCARD[h] then h = "127.0.0.1" end
            h = bracket(h)
            list[#list + 1] = ("%s://%s:%d"):format(scheme, h, port)
            if h == "127.0.0.1" or h == "[::1]" then
                list[#list + 1] = ("%s://localhost:%d"):format(scheme, port)
            end
        end
        add("http", cfg.gate.host, cfg.gate.port)
        if cfg.tls_proxy.enabled then -- and through the proxy
            add("https", cfg.tls_proxy.public_host, cfg.tls_proxy.gate_port)
        end
        cfg.chat.ws_origins = list
    end
    if cfg.client.gate_url == nil then
        local h = cfg.gate.host
        if WILDCARD[h] then h = "127.0.0.1" end
        if h:find(":", 1, true) then h = "[" .. h .. "]" end
        cfg.client.gate_url = ("http://%s:%d"):format(h, cfg.gate.port)
    end
end

-- Every port the config names, with its host and the setting naming it, in a fixed order:
-- the roles' listeners (a gate with N workers has N admin ports from admin_port on),
-- then Redis, MariaDB and the SMTP server. Port 0 (an admin port that is off) is left out.
local function listeners(cfg)
    local out = {}
    local function add(what, h, port, count)
        for i = 0, (count or 1) - 1 do
            if port ~= 0 then
                out[#out + 1] = { what = count and count > 1 and ("%s+%d"):format(what, i) or what,
                    host = h, port = port + i }
            end
        end
    end
    local admin = cfg.admin.host
    add("gate.port", cfg.gate.host, cfg.gate.port)
    add("gate.admin_port", admin, cfg.gate.admin_port, cfg.gate.workers)
    for _, role in ipairs({ "verify", "status" }) do
        add(role .. ".port", cfg[role].host, cfg[role].port)
        add(role .. ".admin_port", admin, cfg[role].admin_port)
    end
    local declared = {}
    for name in pairs(cfg.roles) do declared[#declared + 1] = name end
    table.sort(declared)
    for _, name in ipairs(declared) do
        local entry, section = roles.get(cfg, name)
        for _, p in ipairs(roles.ports(entry, section)) do
            add(entry.path .. "." .. p.field, p.kind == "admin" and admin or section.host, p.port)
        end
    end
    local names = {}
    for n in pairs(cfg.chat.instances) do names[#names + 1] = n end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, n in ipairs(names) do
        local inst, p = cfg.chat.instances[n], "chat.instances." .. tostring(n) .. "."
        local h = inst.host or cfg.chat.host
        add(p .. "port", h, inst.port)
        add(p .. "rpc_port", h, inst.rpc_port)
        add(p .. "admin_port", admin, inst.admin_port)
        add(p .. "ws_port", h, inst.ws_port or cfg.chat.ws_port)
    end
    add("resource.port", cfg.resource.host, cfg.resource.port)
    add("resource.http_port", cfg.resource.host, cfg.resource.http_port)
    add("resource.admin_port", admin, cfg.resource.admin_port)
    local tp = cfg.tls_proxy
    if tp.enabled then -- the proxy's listeners
        add("tls_proxy.gate_port", tp.host, tp.gate_port)
        for _, n in ipairs(names) do
            local inst, p = cfg.chat.instances[n], "chat.instances." .. tostring(n) .. "."
            add(p .. "public_port", tp.host, inst.public_port)
            if inst.public_ws_port then add(p .. "public_ws_port", tp.host, inst.public_ws_port) end
        end
        add("resource.public_port", tp.host, cfg.resource.public_port)
        add("resource.public_http_port", tp.host, cfg.resource.public_http_port)
    end
    add("redis.port", cfg.redis.host, cfg.redis.port)
    add("mysql.port", cfg.mysql.host, cfg.mysql.port)
    local scheme, rest = cfg.mail.url:match("^(smtps?)://([^/]*)")
    if scheme then
        local h, port = rest:match("^%[(.*)%]:?(%d*)$")
        if not h then h, port = rest:match("^([^:]*):?(%d*)$") end
        if h then
            port = tonumber(port) or (scheme == "smtps" and 465 or 25)
            add("mail.url", h, port)
        end
    end
    return out
end

-- Two things on one port are refused, unless their hosts differ and neither is a wildcard
-- (hosts are compared as written: "localhost" and "127.0.0.1" differ).
local function check_ports(cfg)
    local seen = {}
    for _, l in ipairs(listeners(cfg)) do
        for _, o in ipairs(seen[l.port] or {}) do
            if o.host == l.host or WILDCARD[o.host] or WILDCARD[l.host] then
                error(("%s: %d is already used by %s"):format(l.what, l.port, o.what), 0)
            end
        end
        seen[l.port] = seen[l.port] or {}
        table.insert(seen[l.port], l)
    end
end

-- A declared role may not take the name of a built-in role or of a command, and its name
-- is a folder of scripts/ and a word on the command line.
local function check_role_names(cfg)
    for name in pairs(cfg.roles) do
        local what = roles.BUILTIN[name] and "a built-in role" or roles.COMMANDS[name] and "a command"
        if what then error(("roles.%s: %s has that name"):format(name, what), 0) end
        if type(name) ~= "string" or not name:match("^%l[%l%d_]*$") then
            error(("roles.%s: a role name is lower-case letters, digits and _"):format(
                tostring(name)), 0)
        end
    end
end

function M.load(path, role, name)
    local cfg = load_file(path)
    apply_env(cfg)
    apply_schema(cfg, SCHEMA, "")
    check_role_names(cfg)
    derive(cfg)
    check_ports(cfg)
    check_nesting(cfg)
    check_tls(cfg)
    check_tls_proxy(cfg)
    check_secret(cfg)
    check_sentinel(cfg)
    cfg.self = resolve_self(cfg, role, name)
    return cfg
end

-- A read-only view: reading works as on the table, assigning raises an error.
function M.readonly(tbl, path)
    local cache = {}
    local proxy = {}
    setmetatable(proxy, {
        __index = function(_, k)
            local v = tbl[k]
            if type(v) ~= "table" then return v end
            local p = cache[k]
            if not p then
                p = M.readonly(v, path .. "." .. tostring(k))
                cache[k] = p
            end
            return p
        end,
        __newindex = function(_, k)
            error(("%s.%s: host.config is read-only"):format(path, tostring(k)), 2)
        end,
        __len = function() return #tbl end,
        __metatable = false,
    })
    return proxy
end

-- A deep copy of a (possibly read-only) config section, for code that needs pairs().
function M.copy(tbl)
    local out = {}
    for k, v in pairs(tbl) do
        out[k] = type(v) == "table" and M.copy(v) or v
    end
    return out
end

-- Publishes cfg to scripts: host.config (read-only), host.config_copy() (a deep copy
-- of the whole config, for code that needs pairs()) and host.config_instance(role, name)
-- (what host.config.self would be in the process of that instance, a copy; nil, err for
-- an instance the config does not define), so a chat server reads a peer's settings
-- exactly as the peer does.
function M.publish(host, cfg)
    host.config = M.readonly(cfg, "config")
    host.config_copy = function() return M.copy(cfg) end
    host.config_instance = function(role, name)
        if type(role) ~= "string" or type(name) ~= "string" then
            error("config_instance(role, name): expected two strings", 2)
        end
        if not roles.get(cfg, role) then return nil, "unknown role " .. role end
        local ok, section = pcall(resolve_self, cfg, role, name)
        if not ok then return nil, section end
        return M.copy(section)
    end
end

return M

-- config.lua: the whole local cluster. A plain Lua table; `env(NAME, default)` reads an
-- environment variable. Secrets (passwords) come only from the environment: `make run`
-- generates them into .run/secrets.env, `make test` per run. Any value left out takes the
-- default shown here. CHATHOST_REDIS_HOST/PORT/PASSWORD, CHATHOST_MYSQL_HOST/PORT/USER/
-- PASSWORD/DATABASE and CHATHOST_LOG_LEVEL override the values below. A key this file
-- does not know, at the top or in a section, is refused (a typo would otherwise leave the
-- real setting at its default), and so are two things on one port.
return {
    -- Every role (gate, verify, status, chat) listens on this address unless its section
    -- sets its own `host`. Loopback: nothing is reachable from other machines. "0.0.0.0"
    -- exposes every role; `gate = { host = "0.0.0.0" }` only the gate.
    bind_host = "127.0.0.1",

    log = { level = "info" },               -- debug | info | warn | error | off

    scripts = {
        dir = "scripts",                    -- relative to this file
        watch = true,                       -- reload when a script changes on disk
        reload_debounce_ms = 20,            -- quiet time after the last change before reloading
    },

    migrations = {
        dir = "sql",                        -- numbered .sql files applied by `chathost migrate`
        lock_stale_s = 900,                 -- with several mysql.nodes (Galera): the lock row
                                            -- of a migrate that died is taken over this late
    },

    redis = {
        host = "127.0.0.1", port = 6380,
        password = env("CHATHOST_REDIS_PASSWORD"),
        db = 0,
        pool_size = 2,                      -- connections per process
        connect_timeout_ms = 1000,
        command_timeout_ms = 1000,          -- a command without reply by then: nil, "timeout"
        reconnect_min_ms = 100,             -- reconnect backoff, doubling up to the max
        reconnect_max_ms = 2000,
        max_pending = 10000,                -- commands in flight per process; beyond: nil, "busy"
        -- Redis Sentinel instead of host/port (both or neither; `tools/sentinel.sh start`
        -- runs a local trio): the master is asked of the sentinels in turn and followed
        -- across failovers. CHATHOST_REDIS_SENTINELS="ip:port,ip:port" and
        -- CHATHOST_REDIS_MASTER_NAME set them from the environment.
        -- sentinels = { "127.0.0.1:6392", "127.0.0.1:6393", "127.0.0.1:6394" },
        -- master_name = "chathost",
        sentinel_password = env("CHATHOST_REDIS_SENTINEL_PASSWORD"), -- if the sentinels want AUTH
        sentinel_timeout_ms = 500,          -- per sentinel asked (connect, AUTH, answer each)
    },

    mysql = {
        host = "127.0.0.1", port = 3308,
        user = "chathost", password = env("CHATHOST_MYSQL_PASSWORD"), database = "chathost",
        pool_size = 4,                      -- worker threads, one connection each
        connect_timeout_s = 3, read_timeout_s = 10, write_timeout_s = 10,
        acquire_timeout_ms = 2000,          -- wait for a free connection, then nil, "busy"
        max_waiting = 10000,                -- queued requests; beyond: nil, "busy"
        stmt_cache = 64,                    -- prepared statements kept per connection
        ping_idle_ms = 30000,               -- ping a connection idle this long before use
        -- A Galera cluster (tools/galera.sh prints its list): the nodes instead of host and
        -- port; environment CHATHOST_MYSQL_NODES="host:port,host:port".
        -- nodes = { "127.0.0.1:31001", "127.0.0.1:31005", "127.0.0.1:31009" },
        policy = "prefer_first",            -- every connection to the first live node, or
                                            -- "spread": connection i to node i % n first
        node_retry_ms = 2000,               -- a node found dead is tried again after this long
        conflict_attempts = 3,              -- runs of a transaction that loses a deadlock or a
                                            -- Galera certification conflict (1213)
    },

    crypto = {
        argon2_opslimit = 2,                -- argon2id passes (OWASP minimum: 2)
        argon2_memlimit_kib = 19456,        -- argon2id memory (OWASP minimum: 19 MiB)
        max_concurrent = 2,                 -- hashes running at once (each takes the memory above)
        max_waiting = 1000,                 -- hashes waiting for a turn; beyond: nil, "busy"
        wait_timeout_ms = 5000,
    },

    file = {
        max_open = 1024,                    -- host.file's open files per process (each
                                            -- upload or download in flight holds one);
                                            -- beyond: open() fails with "EMFILE"
    },

    grpc = {
        deadline_ms = 2000,                 -- every call between roles has a deadline
        max_message_bytes = 4194304,
        max_inflight_calls = 10000,         -- per server; beyond: RESOURCE_EXHAUSTED
        secret = env("CHATHOST_GRPC_SECRET"), -- calls between roles carry it; servers refuse
                                            -- calls without it (`make run` generates one)
        -- tls = { cert_file = "...", key_file = "...", ca_file = "..." }, -- roles on other hosts
    },

    mail = {                                -- verification codes; `make run` starts a sink here
        url = "smtp://127.0.0.1:2525",      -- smtps://host:465 for TLS from the start
        from = "chathost <noreply@chathost.local>",
        user = env("CHATHOST_MAIL_USER"), password = env("CHATHOST_MAIL_PASSWORD"),
        tls = "none",                       -- none | try | starttls
        timeout_ms = 10000,                 -- per mail (verify: within its caller's deadline)
    },

    http_client = {                         -- host.http.request (the terminal client's gate)
        timeout_ms = 10000,                 -- a whole request, unless the call says otherwise
        connect_timeout_ms = 5000,          -- TCP and TLS handshake
        max_response_bytes = 16777216,      -- a larger body fails the request
        max_redirects = 5,                  -- https never follows a redirect to http
        max_total_connections = 64, max_host_connections = 8, -- keep-alive pool bounds
        max_waiting = 1000,                 -- beyond the pool: then nil, "busy"
        idle_timeout_s = 30,                -- a pooled idle connection is closed after this
        -- ca_file = "/etc/chathost/ca.pem", -- private CA for https (default: the system's)
        -- insecure = true,                 -- development only: no certificate check (warned)
        -- proxies: the standard http_proxy, https_proxy and no_proxy environment variables
    },

    admin = { host = "127.0.0.1" },         -- /healthz and /metrics of every role (admin_port)
    shutdown = { grace_ms = 3000 },         -- SIGTERM: stop hooks (presence, liveness) get this

    test = { timeout_ms = 10000 },          -- per-test timeout of `chathost test`

    -- Roles. Each process runs one; the addresses below are where they listen.
    gate = {
        port = 8080, admin_port = 9100,
        workers = 1,                        -- processes sharing the port (SO_REUSEPORT)
        max_body_bytes = 65536, read_timeout_ms = 10000, idle_timeout_ms = 60000,
        max_connections = 10000,
        max_connections_per_ip = 256,       -- one address's share (trusted proxies spared)
        first_byte_timeout_ms = 5000,       -- a new connection that sends nothing is closed
        trusted_proxies = {},               -- e.g. { "10.0.0.5" }: whose X-Forwarded-For names the client
        web_dir = "web",                    -- the web client (GET /), relative to this file; "": none
        web_max_age_s = 300,                -- how long browsers keep its scripts and styles
        accounts = {                        -- scripts/gate: codes, logins, rate limits
            code_max_tries = 5,             -- wrong codes; the last deletes the code
            code_ip_limit = 20, code_ip_window_s = 3600,
            login_email_limit = 5, login_ip_limit = 50, login_window_s = 900,
            login_email_ip_limit = 5,       -- failed logins per (e-mail, IP) per window: then 1017
            -- an e-mail's failures from any IP only slow it down: 1 s, doubling, at most 60 s
            login_email_backoff_s = 1, login_email_backoff_max_s = 60,
            login_wait_ms = 5000,           -- a login waits for those in flight; then 1018
            -- registrations/resets that hash a password, per IP per hour and per code
            hash_ip_limit = 20, hash_ip_window_s = 3600, code_max_hashes = 3,
        },
    },
    verify = {
        port = 50051, admin_port = 9101,
        reply_margin_ms = 200,              -- a mail gets at most the caller's deadline minus this
    },
    status = { port = 50052, admin_port = 9102 },
    chat = {
        -- host = "0.0.0.0" accepts clients from elsewhere (default: bind_host); an instance
        -- may set its own host and public_host (the address announced to clients)
        heartbeat_timeout_ms = 60000,       -- clients send 1023 every 10 s
        login_timeout_ms = 10000,           -- a connection that has not logged in by then
        max_connections = 200000,           -- lowered to the open-file limit minus fd_reserve
        fd_reserve = 256,                   -- descriptors kept for pools, gRPC, admin, files
        max_body_bytes = 8192,              -- frames above: 1016 and close (never above 65535)
        send_queue_bytes = 1048576, send_queue_frames = 1000, -- a client that does not read
        page_size = 50,                     -- 1025/1029 paging
        presence_ttl_s = 120,               -- uip_/usession_ keys, refreshed by heartbeats
        alive_ttl_s = 15, report_interval_ms = 5000, -- liveness and load seen by status
        batch_window_ms = 1, batch_max = 64, -- group commit of chat messages (a message waits up to
                                            -- the window for company; 2 ms cost ~1 ms of p99 for
                                            -- no throughput, bench/RESULTS.md)
        dedupe_window_s = 86400,            -- a 1017 item resent within this long (same fromuid and
                                            -- unique_id) answers the first message_id, stored once
        login_concurrency = 32,             -- logins in progress at once: a storm of logins is
                                            -- admitted at the rate the stores serve it
        login_wait_ms = 20000,              -- a login waiting for its turn longer: 1018 (keep it
                                            -- under handler_timeout_ms)
        handler_timeout_ms = 30000,         -- a message handler running longer: cancelled, 1019
        push_timeout_ms = 2000,             -- a push through a peer chat server gives up
        push_queue_max = 2,                 -- a session's pushes waiting for one peer: then it waits too
        push_batch_window_ms = 0,           -- the first push to an idle peer server waits this long
                                            -- for company; those queued while a call is in flight
                                            -- travel in the next (0: the call goes at once; 1 ms
                                            -- cost ~1 ms of push p50 for no throughput, RESULTS.md)
        push_batch_max = 256,               -- at most this many pushes per call (NotifyBatch) or link frame
        push_link = true,                   -- pushes to peers over one TCP link each to their client
                                            -- port (needs grpc.secret; not with grpc.tls): docs/protocol.md §6.7
        push_link_window = 8,               -- batches on a link not yet answered, at most
        location_cache_ms = 1000,           -- a receiver's server (uip_) read once serves its pushes
                                            -- this long (a moved user: the push follows); 0: read
                                            -- uip_ for every push (a Redis round trip in front of
                                            -- each push: its p99 +3-5 ms at half load, RESULTS.md)
        group_max_members = 500,            -- members of one group, owner included
        group_max_per_user = 200,           -- groups one user may be a member of
        group_name_max_bytes = 64,          -- a group's name (UTF-8 bytes)
        group_cache_max = 10000,            -- groups whose member list a chat server keeps (the
                                            -- fan-out of a group message reads no SQL while cached)
        unread_count_max = 999,             -- a thread's unread count in 1026 is cut at this
        -- WebSocket transport for browsers (docs/protocol.md §5.5): an instance's ws_port
        -- (0 = off); ws_origins = the pages allowed to connect, by default the gate's own
        -- http://host:port (and http://localhost:port on loopback); "*" allows any site
        ws_max_message_bytes = 16384,       -- a bigger message: close 1009
        ws_ping_interval_ms = 20000,        -- the server pings each WebSocket this often
        ws_handshake_timeout_ms = 5000,     -- the upgrade request complete by then, else closed
        ws_handshake_max_bytes = 8192,      -- the upgrade request's size: beyond, 431 and close
        -- behind the TLS proxy an instance may also set public_port / public_ws_port (the
        -- proxy's ports for port / ws_port; default: + tls_proxy.port_offset)
        instances = {
            chat1 = { port = 8090, rpc_port = 50055, admin_port = 9110, ws_port = 8096 },
            chat2 = { port = 8091, rpc_port = 50056, admin_port = 9111, ws_port = 8097 },
        },
    },
    resource = {                            -- avatars and chat images (docs/protocol.md §13)
        -- host = "0.0.0.0" accepts clients from elsewhere (default: bind_host);
        -- public_host = what the gate's login reply tells clients to dial (default: host);
        -- behind the TLS proxy, public_port / public_http_port: its ports for these two
        port = 8093,                        -- the resource channel (the login's resport)
        http_port = 8094,                   -- plain HTTP downloads by signed URL (1049/1050)
        admin_port = 9112,
        url_secret = env("CHATHOST_RESOURCE_URL_SECRET"), -- signs those URLs (>= 16 chars;
                                            -- `make run` generates one)
        url_ttl_s = 300,                    -- a signed URL is valid this long
        -- dir = "/var/lib/chathost/files", -- storage root; default: the run's folder (.run/files)
        max_file_bytes = 10485760,          -- one avatar or image; beyond: 1101
        image_types = { "png", "jpeg", "gif", "webp", "bmp" }, -- told by content; others: 1102
        quota_bytes = 104857600,            -- per user, uploads kept or running; beyond: 1103
        max_uploads = 8,                    -- unfinished uploads per user at once; beyond: 1103
        upload_ttl_s = 3600,                -- an upload without a chunk this long expires
        sweep_interval_ms = 10000, sweep_batch = 100, -- the expiry sweeper: tick, uploads per tick
        rename_grace_ms = 60000,            -- a file stored before BLAKE3 named files (sql/006)
                                            -- keeps its old name this long after it is renamed
        session_recheck_ms = 10000,         -- a connection's chat session is checked again after
                                            -- this: a logged-out user's connection is refused (1010);
                                            -- the upload row a connection keeps is read again too
        max_chunks_in_flight = 8,           -- a connection's chunks being written and tallied at
                                            -- once (the S2 client keeps 5 in flight); beyond, the
                                            -- next chunk waits until they are all answered
        max_body_bytes = 65536,             -- one frame (a 32 KiB chunk in base64 is ~44 KB)
        pool_threads = 2,                   -- threads opening, syncing, reading files (libuv's
                                            -- pool); more when the disk's fsync is slow (a
                                            -- completion syncs) or reads miss the page cache
        write_spin_us = 100,                -- a writer out of work spins this long before it
                                            -- sleeps (the next chunk finds it awake); 0: none
        write_threads = 1,                  -- threads writing the chunks: one file's writes run
                                            -- one at a time, in order, on one of them; one
                                            -- thread (always the same) is the fastest on two
                                            -- cores (bench/RESULTS.md); more on more cores
        channel_idle_timeout_ms = 43200000, -- 12 h: the S2 client keeps the connection silent
                                            -- between transfers and logs out if it closes
        max_connections = 100000,           -- lowered to the open-file limit minus a reserve
        max_connections_per_ip = 256,       -- one address's share (a NAT holds many users)
    },
    -- TLS for users (README "Security", tools/tls_proxy.sh): a private nginx in front of the
    -- gate (https), each chat server (TLS frames, wss) and the resource role (TLS channel,
    -- https downloads). `make run TLS=1` turns it on with a self-signed certificate.
    tls_proxy = {
        enabled = false,                    -- CHATHOST_TLS_PROXY=1: a login through the proxy is
                                            -- told its addresses (wss://), 1049 links are https
        -- host = "203.0.113.5",            -- where nginx listens (default bind_host) ...
        -- public_host = "chat.example.com", -- ... and the name clients dial (the certificate's)
        port_offset = 10000,                -- each proxied port: the listener's + this (8080 ->
                                            -- 18080) unless its public_*port / gate_port is set
        -- cert_file = "/etc/chathost/tls/fullchain.pem", key_file = "/etc/chathost/tls/privkey.pem",
                                            -- or CHATHOST_TLS_CERT_FILE / _KEY_FILE; none: `make
                                            -- run TLS=1` makes a self-signed one in .run/tls
    },

    -- `chathost client` talks to client.gate_url, by default this file's gate (gate.port);
    -- an https:// gate_url is checked against client.ca_file (--ca-file), else the system's CAs

    -- Roles of your own (README "Adding a role"): each entry runs as `chathost NAME` with
    -- scripts/NAME/init.lua, `make run` starts it, and the entry is its host.config.self:
    -- roles = { echo = { http_port = 8095, grpc_port = 50070, admin_port = 9120,
    --                    stores = { "redis" }, settings = {} } },
}

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

    migrations = { dir = "sql" },           -- numbered .sql files applied by `chathost migrate`

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
    },

    crypto = {
        argon2_opslimit = 2,                -- argon2id passes (OWASP minimum: 2)
        argon2_memlimit_kib = 19456,        -- argon2id memory (OWASP minimum: 19 MiB)
        max_concurrent = 2,                 -- hashes running at once (each takes the memory above)
        max_waiting = 1000,                 -- hashes waiting for a turn; beyond: nil, "busy"
        wait_timeout_ms = 5000,
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
        batch_window_ms = 2, batch_max = 64, -- group commit of chat messages
        dedupe_window_s = 86400,            -- a 1017 item resent within this long (same fromuid and
                                            -- unique_id) answers the first message_id, stored once
        login_concurrency = 32,             -- logins in progress at once: a storm of logins is
                                            -- admitted at the rate the stores serve it
        login_wait_ms = 20000,              -- a login waiting for its turn longer: 1018 (keep it
                                            -- under handler_timeout_ms)
        handler_timeout_ms = 30000,         -- a message handler running longer: cancelled, 1019
        push_timeout_ms = 2000,             -- a push through a peer chat server gives up
        push_queue_max = 2,                 -- a session's pushes waiting for one peer: then it waits too
        push_batch_window_ms = 1,           -- pushes to one peer server gathered this long (and while
                                            -- its previous call is in flight) travel in one call
        push_batch_max = 256,               -- at most this many pushes per call (NotifyBatch)
        location_cache_ms = 0,              -- a receiver's server (uip_) read once serves its pushes
                                            -- this long (a moved user: the push follows); 0: read
                                            -- uip_ for every push (off until a quiet benchmark shows
                                            -- the pair faster with it, bench/RESULTS.md)
        instances = {
            chat1 = { port = 8090, rpc_port = 50055, admin_port = 9110 },
            chat2 = { port = 8091, rpc_port = 50056, admin_port = 9111 },
        },
    },
    -- `chathost client` talks to client.gate_url, by default this file's gate (gate.port)

    -- Roles of your own (README "Adding a role"): each entry runs as `chathost NAME` with
    -- scripts/NAME/init.lua, `make run` starts it, and the entry is its host.config.self:
    -- roles = { echo = { http_port = 8095, grpc_port = 50070, admin_port = 9120,
    --                    stores = { "redis" }, settings = {} } },
}

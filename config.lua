-- config.lua: the whole local cluster. A plain Lua table; `env(NAME, default)` reads an
-- environment variable. Secrets (passwords) come only from the environment: `make run`
-- generates them into .run/secrets.env, `make test` per run. Any value left out takes the
-- default shown here. CHATHOST_REDIS_HOST/PORT/PASSWORD, CHATHOST_MYSQL_HOST/PORT/USER/
-- PASSWORD/DATABASE and CHATHOST_LOG_LEVEL override the values below.
return {
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
    },

    mail = {                                -- verification codes; `make run` starts a sink here
        url = "smtp://127.0.0.1:2525",      -- smtps://host:465 for TLS from the start
        from = "chathost <noreply@chathost.local>",
        user = env("CHATHOST_MAIL_USER"), password = env("CHATHOST_MAIL_PASSWORD"),
        tls = "none",                       -- none | try | starttls
        timeout_ms = 10000,
    },

    admin = { host = "127.0.0.1" },         -- /healthz and /metrics of every role (admin_port)
    shutdown = { grace_ms = 3000 },         -- SIGTERM: stop hooks (presence, liveness) get this

    test = { timeout_ms = 10000 },          -- per-test timeout of `chathost test`

    -- Roles. Each process runs one; the addresses below are where they listen.
    gate = {
        host = "0.0.0.0", port = 8080, admin_port = 9100,
        workers = 1,                        -- processes sharing the port (SO_REUSEPORT)
        max_body_bytes = 65536, read_timeout_ms = 10000, idle_timeout_ms = 60000,
        max_connections = 10000,
        trusted_proxies = {},               -- e.g. { "10.0.0.5" }: whose X-Forwarded-For names the client
        accounts = {                        -- scripts/gate: codes, logins, rate limits
            code_max_tries = 5,             -- wrong codes; the last deletes the code
            code_ip_limit = 20, code_ip_window_s = 3600,
            login_email_limit = 5, login_ip_limit = 50, login_window_s = 900,
        },
    },
    verify = { host = "127.0.0.1", port = 50051, admin_port = 9101 },
    status = { host = "127.0.0.1", port = 50052, admin_port = 9102 },
    chat = {
        host = "127.0.0.1",                 -- "0.0.0.0" to accept clients from elsewhere
        heartbeat_timeout_ms = 60000,       -- clients send 1023 every 10 s
        max_body_bytes = 8192,              -- frames above: 1016 and close (never above 65535)
        send_queue_bytes = 1048576, send_queue_frames = 1000, -- a client that does not read
        page_size = 50,                     -- 1025/1029 paging
        presence_ttl_s = 120,               -- uip_/usession_ keys, refreshed by heartbeats
        alive_ttl_s = 15, report_interval_ms = 5000, -- liveness and load seen by status
        batch_window_ms = 2, batch_max = 64, -- group commit of chat messages
        handler_timeout_ms = 30000,         -- a message handler running longer: cancelled, 1019
        push_timeout_ms = 2000,             -- a push through a peer chat server gives up
        push_queue_max = 2,                 -- a session's pushes waiting for one peer: then it waits too
        instances = {
            chat1 = { port = 8090, rpc_port = 50055, admin_port = 9110 },
            chat2 = { port = 8091, rpc_port = 50056, admin_port = 9111 },
        },
    },
}

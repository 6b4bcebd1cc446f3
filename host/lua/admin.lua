-- chathost.admin: the admin HTTP listener every role runs on its admin_port (0: none).
-- GET /healthz checks the stores the role uses (and what its scripts' health() checks); GET /metrics is Prometheus text: the series
-- the host and scripts record, plus gauges and totals read at scrape time (coroutines, pools,
-- hashes, reloads). Every name starts with chathost_; counters end in _total.
local host = require "host"

local M = {}

-- The stores the role depends on (its entry in chathost.roles): a set, { redis = true }.
local function set(list)
    local out = {}
    for _, name in ipairs(list or {}) do out[name] = true end
    return out
end

local function check_redis()
    local pong, err = host.redis.call("PING")
    if pong == "PONG" then return "ok" end
    return "failing: " .. tostring(err)
end

local function check_mysql()
    local rows, err = host.db.query("SELECT 1 AS ok")
    if rows and rows[1] and rows[1].ok == 1 then return "ok" end
    return "failing: " .. tostring(err)
end

-- The scripts' own checks: health() in the role's handler table, if it has one, returns
-- { name = "ok" | "failing: why" } (the resource role: its storage folder).
local function check_scripts(scripts, checks)
    local fn = scripts and scripts:handlers().health
    if type(fn) ~= "function" then return end
    local ok, res = pcall(fn)
    if not ok or type(res) ~= "table" then
        checks.scripts = "failing: health() " .. (ok and "returned no table" or tostring(res))
        return
    end
    for k, v in pairs(res) do checks[tostring(k)] = tostring(v) end
end

local function healthz(uses, scripts)
    local checks, healthy = {}, true
    if uses.redis then checks.redis = check_redis() end
    if uses.mysql then checks.mysql = check_mysql() end
    check_scripts(scripts, checks)
    for _, v in pairs(checks) do healthy = healthy and v == "ok" end
    return healthy and 200 or 503, nil, {
        status = healthy and "ok" or "failing", role = host.role, name = host.name, checks = checks }
end

local function gauge(name, value, help, labels)
    if value then host.metrics.set(name, value, labels, help) end
end

-- A running total kept elsewhere (a counter to Prometheus).
local function total(name, value, help, labels)
    if value then host.metrics.set_total(name, value, labels, help) end
end

-- Gauges and totals that are cheapest read when scraped.
local function sample(scripts, uses)
    local s = host.stats()
    local who = { role = host.role, name = host.name }
    gauge("chathost_coroutines", s.tasks_alive, "Coroutines alive.", who)
    total("chathost_coroutines_started_total", s.tasks_started, "Coroutines started since start-up.",
        who)
    if uses.redis then
        local r = host.redis.stats()
        gauge("chathost_redis_connected", r.connected, "Redis connections ready.")
        gauge("chathost_redis_pending", r.pending, "Redis commands in flight.")
        total("chathost_redis_timeouts_total", r.timeouts, "Redis commands that timed out.")
        total("chathost_redis_failovers_total", r.failovers,
            "Times the Redis master's address changed (Sentinel mode).")
    end
    if uses.mysql then
        local d = host.db.stats()
        gauge("chathost_mysql_busy", d.busy, "MySQL connections in use.")
        gauge("chathost_mysql_idle", d.idle, "MySQL connections idle.")
        gauge("chathost_mysql_waiting", d.waiting, "Requests waiting for a MySQL connection.")
        total("chathost_mysql_busy_rejections_total", d.busy_rejections,
            "MySQL requests refused: busy.")
        for _, n in ipairs(d.nodes or {}) do -- mysql.nodes (Galera), or the one server
            local node = { node = n.address }
            gauge("chathost_mysql_node_up", n.dead and 0 or 1,
                "1 while the pool uses the MySQL node, 0 while it is left as dead.", node)
            gauge("chathost_mysql_node_connections", n.connections,
                "Pool connections open to the MySQL node.", node)
            total("chathost_mysql_node_failures_total", n.failures,
                "Times the MySQL node was found dead (refused, lost, not ready).", node)
        end
    end
    local c = host.crypto.stats()
    gauge("chathost_hash_active", c.active, "Password hashes running.")
    gauge("chathost_hash_waiting", c.waiting, "Password hashes waiting for a turn.")
    total("chathost_hash_cpu_seconds_total", c.cpu_seconds, "Thread CPU spent hashing passwords.")
    total("chathost_hashes_total", c.hashes, "Passwords hashed since start-up.")
    total("chathost_hash_verifications_total", c.verifies,
        "Password hashes verified since start-up.")
    if scripts then
        local st = scripts:stats()
        gauge("chathost_script_generation", st.generation, "Script generation serving requests.")
        total("chathost_script_reloads_total", st.reloads, "Script reloads attempted.")
        total("chathost_script_reload_failures_total", st.failures, "Script reloads that failed.")
    end
end

-- stores: what the role uses, { "redis", "mysql" } (checked by /healthz, sampled by /metrics).
function M.routes(scripts, stores)
    local uses = set(stores)
    return {
        ["GET /healthz"] = function() return healthz(uses, scripts) end,
        ["GET /metrics"] = function()
            sample(scripts, uses)
            return 200, { ["Content-Type"] = "text/plain; version=0.0.4" }, host.metrics.render()
        end,
    }
end

-- Starts the listener on host.config.admin.host:<port> for a role using stores (see
-- M.routes); nil, err when the port is taken.
function M.start(port, scripts, stores)
    if not port or port == 0 then return true end
    local address = host.config.admin.host .. ":" .. port
    local server, err = host.http.serve { address = address, name = "admin",
        routes = M.routes(scripts, stores), access_log = false, max_body_bytes = 0,
        read_timeout_ms = 5000, max_connections = 64 }
    if not server then return nil, err end
    host.log.info("admin listening on ", address)
    return server
end

return M

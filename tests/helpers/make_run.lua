-- helpers.make_run: a whole `make run` system (tools/run.sh) for a spec, on the ports and in
-- the folder of its own config, never touching a real `make run`.
local host = require "host"
local util = require "helpers.util"

local M = {}

-- env(dir, extra?) -> the environment run.sh gets: the system's folder (dir/run) and config
-- (dir/config.lua), with the caller's store settings neutralised: a caller's mysql/redis
-- client settings must not steer tools/services.sh, and the addresses `make test` exports
-- are for its own stores, not this system's
function M.env(dir, extra)
    local env = { CHATHOST_RUN_DIR = dir .. "/run", CHATHOST_CONFIG = dir .. "/config.lua",
        CHATHOST_BIN = util.bin(), CHATHOST_LOG_LEVEL = "info",
        MYSQL_HOST = "127.0.0.1", MYSQL_TCP_PORT = "1", MYSQL_UNIX_PORT = "/nonexistent",
        MYSQL_PWD = "wrong", REDISCLI_AUTH = "wrong" }
    for _, k in ipairs({ "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "MYSQL_HOST", "MYSQL_PORT",
        "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE" }) do env["CHATHOST_" .. k] = false end
    for k, v in pairs(extra or {}) do env[k] = v end
    return env
end

-- start(env) -> run.sh's process, once it says the system is up (or it exited: the
-- caller's assertions on its output say why)
function M.start(env)
    local proc = assert(host.proc.spawn({ host.root .. "/tools/run.sh" },
        { env = env, stdout = "capture", stderr = "capture" }))
    assert(util.wait_until(function()
        return proc:output():find("Ctrl-C stops everything", 1, true) or proc.exited
    end, 60000, "the system to come up"))
    return proc
end

-- stop(proc): Ctrl-C first (run.sh's trap stops Redis, MariaDB, the sink and the proxy; a
-- SIGKILL would skip it and leave them running), SIGKILL only if it does not end in time
function M.stop(proc)
    if proc.exited then return end
    proc:kill("INT")
    if not proc:wait(8000) then
        proc:kill("KILL")
        proc:wait()
    end
end

return M

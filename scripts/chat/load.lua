-- chat.load: what the status role reads to pick a chat server (scripts/status/servers.lua):
-- the hash field logincount[<name>] = this server's logged-in sessions, the liveness key
-- chatserver_<name> = {host, port, rpc} with alive_ttl_s, and membership of the set
-- chatservers. Written at start and every report_interval_ms; a server that dies stops
-- refreshing and its liveness key expires, so the status role stops choosing it. A clean
-- stop removes all three at once, and so does a report while MySQL does not answer (a
-- server without its database, e.g. started without the password, is never chosen).
local host = require "host"
local keys = require "lib.keys"
local settings = require "chat.settings"

local M = {}

-- full: the server is at chat.max_connections (see on_capacity in chat/init.lua), so the
-- status role sends no logins here while it is.
local function liveness(full)
    return host.json.encode { host = settings.host, port = settings.port,
        rpc = settings.rpc_address, full = full or nil }
end

-- report() -> true, gone | nil, err: announced only while MySQL answers (Redis answering
-- is what writes the keys). gone: the liveness key was not there before this report (the
-- first report, or Redis lost it: expired in an outage, restarted empty).
function M.report()
    local rows, qerr = host.db.query("SELECT 1 AS ok")
    if not (rows and rows[1] and rows[1].ok == 1) then
        local _, werr = M.withdraw()
        return nil, "not announced, MySQL does not answer: " .. tostring(qerr)
            .. (werr and ("; withdraw: " .. tostring(werr)) or "")
    end
    local count = host.sessions.count()
    local bound = count.bound
    local res, err = host.redis.pipeline {
        { "HSET", keys.LOGIN_COUNT, settings.name, bound },
        { "SET", keys.chat_server(settings.name), liveness(count.full), "EX", settings.alive_ttl_s,
            "GET" },
        { "SADD", keys.CHAT_SERVERS, settings.name },
    }
    if not res then return nil, err end
    for i = 1, #res do
        if type(res[i]) == "table" then return nil, res[i].err end
    end
    host.metrics.set("chathost_chat_sessions_bound", bound, nil,
        "logged-in sessions on this server")
    return true, res[2] == nil or res[2] == host.null
end

-- withdraw() -> true | nil, err: the status role no longer chooses this server
function M.withdraw()
    local res, err = host.redis.pipeline {
        { "DEL", keys.chat_server(settings.name) },
        { "HDEL", keys.LOGIN_COUNT, settings.name },
        { "SREM", keys.CHAT_SERVERS, settings.name },
    }
    if not res then return nil, err end
    return true
end

return M

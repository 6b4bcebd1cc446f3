-- chat.load: what the status role reads to pick a chat server (scripts/status/servers.lua):
-- the hash field logincount[<name>] = this server's logged-in sessions, the liveness key
-- chatserver_<name> = {host, port, rpc, ws_port?} with alive_ttl_s, and membership of the set
-- chatservers. Written at start and every report_interval_ms; a server that dies stops
-- refreshing and its liveness key expires, so the status role stops choosing it. A clean
-- stop removes all three at once. While MySQL does not answer (a server started without
-- the password, a database that is down) the liveness key says db_down and the status role
-- sends no logins here; it stays, because peer servers find this server's address in it to
-- push to the users still connected here. A busy pool is not a database that is down.
local host = require "host"
local keys = require "lib.keys"
local settings = require "chat.settings"

local M = {}

-- full: the server is at chat.max_connections (see on_capacity in chat/init.lua); db_down:
-- MySQL does not answer. The status role sends no logins here while either holds.
local function liveness(full, db_down)
    return host.json.encode { host = settings.host, port = settings.port,
        rpc = settings.rpc_address, ws_port = settings.ws_port, full = full or nil, db_down = db_down or nil }
end

-- The reason MySQL does not answer, or nil when it does (or is only busy).
local function db_problem()
    local rows, err = host.db.query("SELECT 1 AS ok")
    if rows and rows[1] and rows[1].ok == 1 then return nil end
    if err == "busy" then return nil end -- every connection at work: the database answers
    return tostring(err)
end

-- report() -> true, gone, db_err | nil, err (Redis answering is what writes the keys).
-- gone: the liveness key was not there before this report (the first report, or Redis
-- lost it: expired in an outage, restarted empty); db_err: why MySQL does not answer.
function M.report()
    local db_err = db_problem()
    local count = host.sessions.count()
    local bound = count.bound
    local res, err = host.redis.pipeline {
        { "HSET", keys.LOGIN_COUNT, settings.name, bound },
        { "SET", keys.chat_server(settings.name), liveness(count.full, db_err ~= nil), "EX",
            settings.alive_ttl_s, "GET" },
        { "SADD", keys.CHAT_SERVERS, settings.name },
    }
    if not res then return nil, err end
    for i = 1, #res do
        if type(res[i]) == "table" then return nil, res[i].err end
    end
    host.metrics.set("chathost_chat_sessions_bound", bound, nil,
        "logged-in sessions on this server")
    return true, res[2] == nil or res[2] == host.null, db_err
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

-- The status role (StatusService): sends each user to a live chat server chosen by
-- status.policy and issues the login token the chat server will check.
local host = require "host"
local current = require "lib.current"
local errors = require "lib.errors"
local validate = require "lib.validate"
local tokens = require "lib.tokens"
local servers = require "status.servers"
local policy = require "status.policy"
local least_loaded = require "status.least_loaded"

local M = {}

-- The server status.policy chooses among alive (not empty); when the policy raises or
-- returns anything but one of them (matched by name), that is a policy error: logged, and
-- the built-in least-loaded rule chooses instead (users still get a server).
local function choose(alive, tie)
    local ok, s = pcall(policy.choose, alive, tie)
    if ok and type(s) == "table" then
        for _, a in ipairs(alive) do
            if a.name == s.name then return a end
        end
    end
    local why = not ok and tostring(s)
        or ("choose returned " .. (type(s) == "table" and "a server that is not live: "
            .. tostring(s.name) or tostring(s)))
    host.log.error("GetChatServer: policy error: ", why, "; choosing the least loaded server")
    return least_loaded.choose(alive, tie)
end

-- Users sent to each server since its reported load last changed: name -> {base=, n=}.
-- A chat server reports its logged-in users every chat.report_interval_ms (5 s); during a
-- storm of logins (thousands a second) a choice on the reported loads alone would send
-- every user of those seconds to the one server that looked least loaded. So the load the
-- policy sees is the reported one plus the users sent there since that report (kept
-- across hot reloads).
local sent = host.keep("status.sent.v1")

-- Sets s.load of each server of alive to its estimate; a view object keeps its reported
-- load in s.reported.
local function estimate(alive)
    for _, s in ipairs(alive) do
        local reported = s.reported
        if not reported then reported = s.load; s.reported = reported end
        local e = sent[s.name]
        if not e or e.base ~= reported then
            e = { base = reported, n = 0 }
            sent[s.name] = e
        end
        s.load = reported + e.n
    end
end

M["StatusService.GetChatServer"] = function(req)
    if not validate.uid(req.uid) then return { error = errors.UidInvalid } end
    local alive, tie = servers.live()
    if not alive then
        host.log.warn("GetChatServer: redis: ", tie)
        return { error = errors.RPCFailed }
    end
    estimate(alive)
    local s = #alive > 0 and choose(alive, tie)
    if not s then
        host.log.warn("GetChatServer: no live chat server")
        return { error = errors.RPCFailed }
    end
    sent[s.name].n = sent[s.name].n + 1
    local token, err = tokens.issue(req.uid, host.config.self.token_ttl_s)
    if not token then
        host.log.warn("GetChatServer: redis: ", err)
        return { error = errors.RPCFailed }
    end
    return { error = errors.Success, host = s.host, port = s.port, token = token,
        ws_port = s.ws_port }
end

M["StatusService.Login"] = function(req)
    local rsp = { error = errors.TokenInvalid, uid = req.uid, token = "" }
    if not validate.uid(req.uid) then return rsp end
    local valid, err = tokens.valid(req.uid, req.token)
    if valid == nil then
        host.log.warn("Login: redis: ", err)
        return { error = errors.RPCFailed, uid = req.uid }
    end
    if valid then rsp.error, rsp.token = errors.Success, req.token end
    return rsp
end

-- The timer calls the current generation's probe, so an edited status.servers is used
-- from its next tick (a tick is skipped while the previous one runs).
M.probe = servers.probe

-- Redis is back after an outage (host.redis.on_reconnect): the chat servers announce
-- themselves again at once, so the view of them is read again at the next call.
function M.redis_reconnected()
    servers.forget()
end

function M.start()
    host.redis.on_reconnect(current("redis_reconnected"))
    local every = host.config.self.probe_interval_ms
    if every == 0 then return end
    host.timer.every(every, current("probe"))
end

return M

-- gate.reply: ends a request: logs one line per outcome (route, error code, what happened,
-- client IP, masked e-mail; never a password, a code or a token) and returns the reply.
local host = require "host"
local mask = require "lib.mask"
local failure = require "lib.failure"
local request = require "gate.request"

local M = {}

-- done(route, req, rsp, what, email?) -> rsp
function M.done(route, req, rsp, what, email)
    host.log.info(route, ": ", rsp.error, " ", what, " ip=", request.peer(req),
        " email=", mask.email(email))
    return rsp
end

-- failed(route, req, what, err, email?) -> rsp: a Redis, database or hashing failure,
-- answered by lib.failure's rule ("busy", "timeout": 1018; anything else: 1019).
function M.failed(route, req, what, err, email)
    host.log.warn(route, ": ", what, " failed: ", tostring(err), " ip=", request.peer(req),
        " email=", mask.email(email))
    return { error = failure.code(err) }
end

local RESULTS_HELP = "Gate replies by route and JSON error code (every reply is HTTP 200)."

local function counted(route, rsp, ...)
    local code = type(rsp) == "table" and tonumber(rsp.error)
    host.metrics.inc("chathost_gate_results_total", 1,
        { route = route, error = code or "none" }, RESULTS_HELP)
    return rsp, ...
end

-- counted(routes) -> routes: each handler's reply is counted in chathost_gate_results_total
-- by route and by the reply's `error` code, the outcome HTTP statuses do not show.
function M.counted(routes)
    local out = {}
    for route, handler in pairs(routes) do
        out[route] = function(req) return counted(route, handler(req)) end
    end
    return out
end

return M

-- POST /get_varifycode {email}: asks the verify role to mail a code. Errors in the order of
-- docs/protocol.md §3: 1001; 1016 bad e-mail; 1017 one mail per address per interval
-- (the verify role's marker, read here for retry_after) or too many requests from the
-- client's IP; 1002 the verify role is unreachable or could not send (the log line names
-- which, with verify's own words: "verify failed: INTERNAL: mail to a***@... failed: ...").
local errors = require "lib.errors"
local keys = require "lib.keys"
local validate = require "lib.validate"
local ratelimit = require "lib.ratelimit"
local request = require "gate.request"
local reply = require "gate.reply"
local rpc = require "gate.rpc"
local settings = require "gate.settings"

local ROUTE = "get_varifycode"

local FIELDS = {
    { name = "email", kind = "string", required = true, check = validate.email },
}

local function rate_limited(req, email, retry_after, what)
    return reply.done(ROUTE, req, { error = errors.RateLimited, retry_after = retry_after },
        what, email)
end

return function(req)
    local f, bad = request.read(req, FIELDS)
    if not f then return reply.done(ROUTE, req, bad, "refused") end
    local email = f.email:lower()

    local wait, err = ratelimit.blocked(keys.rate("mail", email))
    if wait == nil then return reply.failed(ROUTE, req, "rate check", err, email) end
    if wait then return rate_limited(req, email, wait, "address rate limited") end

    local ok, retry_after = ratelimit.take { { key = keys.rate("code_ip", request.peer(req)),
        limit = settings.code_ip_limit, window = settings.code_ip_window_s } }
    if ok == nil then return reply.failed(ROUTE, req, "rate count", retry_after, email) end
    if not ok then return rate_limited(req, email, retry_after, "ip rate limited") end

    local rsp, rerr, code = rpc.get_varify_code(email)
    if not rsp then
        return reply.done(ROUTE, req, { error = errors.RPCFailed },
            rpc.failure("verify", rerr, code), email)
    end
    if rsp.error == errors.RateLimited then -- another request for the address won the race
        return rate_limited(req, email, ratelimit.blocked(keys.rate("mail", email)) or 1,
            "address rate limited by verify")
    end
    if rsp.error == errors.InvalidParams then
        return reply.done(ROUTE, req, { error = errors.InvalidParams, field = "email" },
            "refused by verify", email)
    end
    if rsp.error ~= errors.Success then
        return reply.done(ROUTE, req, { error = errors.RPCFailed },
            "verify answered " .. tostring(rsp.error), email)
    end
    return reply.done(ROUTE, req, { error = errors.Success, email = email }, "code sent", email)
end

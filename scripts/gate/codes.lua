-- gate.codes: the gate's side of the verification codes (lib.codes owns their Redis keys):
-- a request's code is checked (1003 none, 1004 wrong: the code_max_tries-th wrong guess
-- deletes it), then may hash a password (register, reset) at most code_max_hashes times
-- (one more answers 1003 and deletes it), and is consumed once the request succeeds.
local host = require "host"
local errors = require "lib.errors"
local keys = require "lib.keys"
local codes = require "lib.codes"
local ratelimit = require "lib.ratelimit"
local reply = require "gate.reply"
local request = require "gate.request"
local settings = require "gate.settings"

local M = {}

M.normalize, M.well_formed, M.consume = codes.normalize, codes.well_formed, codes.consume

-- check(email, guess) -> "ok" | "missing" | "wrong" | nil, err. Counts a wrong guess.
function M.check(email, guess)
    return codes.check(email, guess, settings.code_max_tries, host.config.verify.code_ttl_s)
end

-- verify(route, req, email, guess) -> nil (the code is right) | the reply that ends the
-- request: 1003 no code, 1004 wrong (counted), 1018/1019 when Redis fails.
function M.verify(route, req, email, guess)
    local verdict, err = M.check(email, guess)
    if not verdict then return reply.failed(route, req, "code check", err, email) end
    if verdict == "missing" then
        return reply.done(route, req, { error = errors.VarifyExpired }, "no code", email)
    end
    if verdict == "wrong" then
        return reply.done(route, req, { error = errors.VarifyCodeErr }, "wrong code", email)
    end
    return nil
end

-- may_hash(route, req, email, code) -> nil (go on and hash) | the reply that ends the
-- request: 1017 when the client IP used up hash_ip_limit, 1003 when the code was used up
-- or consumed meanwhile, 1018/1019 when Redis fails. Counts the hash against both.
function M.may_hash(route, req, email, code)
    local ok, retry_after = ratelimit.take { { key = keys.rate("hash_ip", request.peer(req)),
        limit = settings.hash_ip_limit, window = settings.hash_ip_window_s } }
    if ok == nil then return reply.failed(route, req, "rate count", retry_after, email) end
    if not ok then
        return reply.done(route, req, { error = errors.RateLimited, retry_after = retry_after },
            "ip hash limited", email)
    end
    local used, err = codes.use(email, code, settings.code_max_hashes,
        host.config.verify.code_ttl_s)
    if used == nil then return reply.failed(route, req, "code use", err, email) end
    if not used then
        return reply.done(route, req, { error = errors.VarifyExpired }, "code used up", email)
    end
    return nil
end

return M

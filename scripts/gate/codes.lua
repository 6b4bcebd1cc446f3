-- gate.codes: the verification codes the verify role stores at code_<email>. Wrong guesses
-- are counted at code_tries_<email>, which dies with the code; the code_max_tries-th wrong
-- guess deletes the code, so the next try finds none (1003). A right code lets a request
-- hash a password (register, reset) at most code_max_hashes times, counted at
-- code_hashes_<email> before hashing; one more answers 1003 and deletes it. Each step is one
-- Redis script, so concurrent requests cannot overrun a count and a code is consumed once.
local host = require "host"
local errors = require "lib.errors"
local keys = require "lib.keys"
local redis_scripts = require "lib.redis_scripts"
local ratelimit = require "lib.ratelimit"
local reply = require "gate.reply"
local request = require "gate.request"
local settings = require "gate.settings"

local M = {}

-- KEYS: code, tries, hashes; ARGV: guess, max tries, fallback TTL of the counter (s).
local CHECK = [[
local code = redis.call('GET', KEYS[1])
if not code then return 'missing' end
if code == ARGV[1] then return 'ok' end
local tries = redis.call('INCR', KEYS[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) else redis.call('EXPIRE', KEYS[2], ARGV[3]) end
if tries >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 'deleted'
end
return 'wrong'
]]

-- KEYS: code, hashes, tries; ARGV: the code, max hashes, fallback TTL of the counter (s).
-- 1: one more hash counted; 0: the code is gone or another, or was used up: then it is
-- deleted, so the next request for a code makes a new one. (Not at the last use: that
-- request may still have to consume it.)
local USE = [[
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = redis.call('INCR', KEYS[2])
if n > tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl)
else redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return 1
]]

-- Six digits, as the verify role makes them (surrounding blanks from a paste are dropped
-- by normalize).
function M.normalize(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

function M.well_formed(s)
    return M.normalize(s):match("^%d%d%d%d%d%d$") ~= nil
end

-- check(email, guess) -> "ok" | "missing" | "wrong" | nil, err. Counts a wrong guess.
function M.check(email, guess)
    local res, err = host.redis.call("EVAL", CHECK, 3, keys.code(email), keys.code_tries(email),
        keys.code_hashes(email), M.normalize(guess), settings.code_max_tries,
        host.config.verify.code_ttl_s)
    if not res then return nil, err end
    if res == "deleted" then return "wrong" end
    return res
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
    local used, err = host.redis.call("EVAL", USE, 3, keys.code(email), keys.code_hashes(email),
        keys.code_tries(email), M.normalize(code), settings.code_max_hashes,
        host.config.verify.code_ttl_s)
    if not used then return reply.failed(route, req, "code use", err, email) end
    if used == 0 then
        return reply.done(route, req, { error = errors.VarifyExpired }, "code used up", email)
    end
    return nil
end

-- consume(email, code) -> true | false (gone or replaced meanwhile) | nil, err
-- Deletes the code and its counters only if the code is still that one.
function M.consume(email, code)
    return redis_scripts.delete_if_equal(
        { keys.code(email), keys.code_tries(email), keys.code_hashes(email) }, M.normalize(code))
end

return M

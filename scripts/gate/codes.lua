-- gate.codes: the verification codes the verify role stores at code_<email>. Wrong guesses
-- are counted at code_tries_<email>, which dies with the code; the code_max_tries-th wrong
-- guess deletes the code, so the next try finds none (1003). Each step is one Redis
-- script, so concurrent guesses cannot overrun the count and a code is consumed once.
local host = require "host"
local errors = require "lib.errors"
local keys = require "lib.keys"
local redis_scripts = require "lib.redis_scripts"
local reply = require "gate.reply"
local settings = require "gate.settings"

local M = {}

-- KEYS: code, tries; ARGV: guess, max tries, fallback TTL of the counter (s).
local CHECK = [[
local code = redis.call('GET', KEYS[1])
if not code then return 'missing' end
if code == ARGV[1] then return 'ok' end
local tries = redis.call('INCR', KEYS[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) else redis.call('EXPIRE', KEYS[2], ARGV[3]) end
if tries >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 'deleted'
end
return 'wrong'
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
    local res, err = host.redis.call("EVAL", CHECK, 2, keys.code(email), keys.code_tries(email),
        M.normalize(guess), settings.code_max_tries, host.config.verify.code_ttl_s)
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

-- consume(email, code) -> true | false (gone or replaced meanwhile) | nil, err
-- Deletes the code and its tries counter only if the code is still that one.
function M.consume(email, code)
    return redis_scripts.delete_if_equal({ keys.code(email), keys.code_tries(email) },
        M.normalize(code))
end

return M

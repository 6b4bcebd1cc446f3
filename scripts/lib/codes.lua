-- lib.codes: the verification codes, the one owner of their Redis keys: code_<email> (the
-- code, with a TTL), code_tries_<email> (wrong guesses) and code_hashes_<email> (password
-- hashes it allowed), which die with the code. The verify role creates codes (and mails
-- them); the gate checks, uses and consumes them. Each step is one Redis script, so
-- concurrent requests cannot overrun a count and a code is consumed once.
local host = require "host"
local keys = require "lib.keys"
local redis_scripts = require "lib.redis_scripts"

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

-- Six digits; surrounding blanks (a paste) are dropped.
local function new_code()
    return ("%06d"):format(host.crypto.random_uniform(1000000))
end

function M.normalize(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

function M.well_formed(s)
    return M.normalize(s):match("^%d%d%d%d%d%d$") ~= nil
end

-- create(email, ttl_s) -> code, is_new | nil, err: the live code of email, or a new one
-- living ttl_s (whose counters start from zero).
function M.create(email, ttl_s)
    for _ = 1, 3 do
        local code = new_code()
        local set, err = host.redis.call("SET", keys.code(email), code, "NX", "EX", ttl_s)
        if err then return nil, err end
        if set then
            host.redis.call("DEL", keys.code_tries(email), keys.code_hashes(email))
            return code, true
        end
        local live, gerr = host.redis.call("GET", keys.code(email))
        if gerr then return nil, gerr end
        if live then return live, false end
        -- expired between SET NX and GET: try again
    end
    return nil, "could not store a code"
end

-- discard(email): a new code that never reached its user (the mail failed) is dropped.
function M.discard(email)
    host.redis.call("DEL", keys.code(email))
end

-- check(email, guess, max_tries, ttl_s) -> "ok" | "missing" | "wrong" | nil, err. Counts a
-- wrong guess; the max_tries-th deletes the code (ttl_s: the counter's fallback TTL).
function M.check(email, guess, max_tries, ttl_s)
    local res, err = host.redis.call("EVAL", CHECK, 3, keys.code(email), keys.code_tries(email),
        keys.code_hashes(email), M.normalize(guess), max_tries, ttl_s)
    if not res then return nil, err end
    if res == "deleted" then return "wrong" end
    return res
end

-- use(email, code, max_hashes, ttl_s) -> true (one more hash counted) | false (gone,
-- another, or used up: then deleted) | nil, err
function M.use(email, code, max_hashes, ttl_s)
    local used, err = host.redis.call("EVAL", USE, 3, keys.code(email), keys.code_hashes(email),
        keys.code_tries(email), M.normalize(code), max_hashes, ttl_s)
    if not used then return nil, err end
    return used == 1
end

-- consume(email, code) -> true | false (gone or replaced meanwhile) | nil, err
-- Deletes the code and its counters only if the code is still that one.
function M.consume(email, code)
    return redis_scripts.delete_if_equal(
        { keys.code(email), keys.code_tries(email), keys.code_hashes(email) }, M.normalize(code))
end

return M

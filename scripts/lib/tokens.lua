-- lib.tokens: the chat login token, the one owner of utoken_<uid>: the status role issues
-- it (with a TTL), the status and chat roles check it, a chat login uses it up.
local host = require "host"
local keys = require "lib.keys"
local redis_scripts = require "lib.redis_scripts"

local M = {}

-- issue(uid, ttl_s) -> token | nil, err: a new 128-bit token for uid, replacing any
-- other, living ttl_s unless a login uses it up first.
function M.issue(uid, ttl_s)
    local token = host.crypto.random_hex(16)
    local ok, err = host.redis.call("SET", keys.token(uid), token, "EX", ttl_s)
    if not ok then return nil, err end
    return token
end

-- valid(uid, token) -> true | false (missing, empty, expired or wrong) | nil, err
function M.valid(uid, token)
    if type(token) ~= "string" or token == "" then return false end
    local stored, err = host.redis.call("GET", keys.token(uid))
    if err then return nil, err end
    return stored ~= nil and host.crypto.constant_time_equal(stored, token)
end

-- KEYS: utoken_; ARGV: the token. Deletes it if it is the token: its time left in ms
-- (0 when it had no TTL), or -1 when it was gone or another one.
local CONSUME = [[
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local left = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
if left < 0 then return 0 end
return left
]]

-- consume(uid, token) -> ms it had left (it was the token: now deleted) | false (gone, or
-- another one) | nil, err. A chat login uses its token up, so it cannot log in again later.
function M.consume(uid, token)
    if type(token) ~= "string" or token == "" then return false end
    local left, err = host.redis.call("EVAL", CONSUME, 1, keys.token(uid), token)
    if left == nil then return nil, err end
    if left < 0 then return false end
    return left
end

-- restore(uid, token, left_ms) -> true | nil, err: gives back a token that consume took,
-- when the login that took it failed after all (1018, "safe to retry": the retry must find
-- it), unless a newer one was issued meanwhile.
function M.restore(uid, token, left_ms)
    local res, err = host.redis.call("SET", keys.token(uid), token, "PX",
        math.max(left_ms, 1000), "NX")
    if res == nil and err then return nil, err end
    return true
end

return M

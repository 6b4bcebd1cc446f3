-- lib.tokens: the chat login token, the one owner of utoken_<uid>: the status role issues
-- it (with a TTL), the status and chat roles check it, a chat login uses it up. Also the
-- owner of restoken_<uid>, the resource session token: the same token, written by the chat
-- login that used it up and kept for as long as that chat session lives (refreshed with
-- the presence keys), so the resource channel (which the client opens before its chat
-- login and authenticates later) can check it after the single-use login token is gone.
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

-- Does key hold token (the token part of its value, when part(value) says which)? -> true |
-- false (missing, empty, expired or another) | nil, err. Constant-time compare.
local function holds(key, token, part)
    if type(token) ~= "string" or token == "" then return false end
    local stored, err = host.redis.call("GET", key)
    if err then return nil, err end
    if stored == nil then return false end
    return host.crypto.constant_time_equal(part and part(stored) or stored, token)
end

-- valid(uid, token) -> true | false (missing, empty, expired or wrong) | nil, err
function M.valid(uid, token)
    return holds(keys.token(uid), token)
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

-- The address part of a session's peer ("1.2.3.4:5678" -> "1.2.3.4", "[::1]:5" -> "::1")
local function address_of(peer)
    if type(peer) ~= "string" then return nil end
    return peer:match("^%[(.*)%]:%d+$") or peer:match("^([^:]+):%d+$") or peer
end

-- session_value(token, peer?) -> what restoken_<uid> holds: the token, and after one space
-- the address the chat session came from (the resource role answers an anonymous 1045
-- only to that address, docs/protocol.md §13.2). The chat session refreshes and closes
-- the key by this whole value.
function M.session_value(token, peer)
    local address = address_of(peer)
    if not address or address == "" then return token end
    return token .. " " .. address
end

-- The token part of a stored value, and its address part (nil: none)
local function split(value)
    local token, address = value:match("^(%S+) (%S+)$")
    if token then return token, address end
    return value, nil
end

-- session_from(uid, peer) -> true when uid has a live chat session whose connection came
-- from peer's address | false | nil, err
function M.session_from(uid, peer)
    local value, err = host.redis.call("GET", keys.session_token(uid))
    if err then return nil, err end
    if not value then return false end
    local _, address = split(value)
    return address ~= nil and address == address_of(peer)
end

-- session_open(uid, value, ttl_s) -> true | nil, err: restoken_<uid> = value (see
-- session_value) for ttl_s, replacing any other (the newer login's session is the one the
-- resource role accepts).
function M.session_open(uid, token, ttl_s)
    if type(token) ~= "string" or token == "" then return nil, "no token" end
    local ok, err = host.redis.call("SET", keys.session_token(uid), token, "EX", ttl_s)
    if not ok then return nil, err end
    return true
end

-- KEYS: restoken_; ARGV: the token, ttl (s). 1 refreshed, 2 it was gone (expired, Redis
-- flushed) and is set again, 0 another token (a newer login) holds it.
local SESSION_REFRESH = [[
local current = redis.call('GET', KEYS[1])
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 2
end
if current ~= ARGV[1] then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
]]

-- session_refresh_cmd(uid, token, ttl_s) -> the EVAL command of session_refresh, for a
-- pipeline
function M.session_refresh_cmd(uid, token, ttl_s)
    return { "EVAL", SESSION_REFRESH, 1, keys.session_token(uid), token, ttl_s }
end

-- session_refresh(uid, token, ttl_s) -> true (kept alive, or set again when it had
-- vanished) | false (a newer login's token holds it) | nil, err
function M.session_refresh(uid, token, ttl_s)
    if type(token) ~= "string" or token == "" then return nil, "no token" end
    local res, err = host.redis.call(unpack(M.session_refresh_cmd(uid, token, ttl_s)))
    if res == nil then return nil, err end
    return res ~= 0
end

-- session_valid(uid, token) -> true | false (missing, empty, expired, closed or another)
-- | nil, err. Constant-time compare.
function M.session_valid(uid, token)
    return holds(keys.session_token(uid), token, function(value) return (split(value)) end)
end

-- session_close_cmd(uid, token) -> the EVAL command of session_close, for a pipeline
function M.session_close_cmd(uid, token)
    return redis_scripts.delete_if_equal_cmd({ keys.session_token(uid) }, token)
end

-- session_close(uid, token) -> true | nil, err: deletes restoken_<uid> if it still holds
-- token (a newer login's token stays).
function M.session_close(uid, token)
    local res, err = redis_scripts.delete_if_equal({ keys.session_token(uid) }, token)
    if res == nil then return nil, err end
    return true
end

return M

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

-- consume(uid, token) -> true (it was the token: now deleted) | false (gone, or another
-- one) | nil, err. A chat login uses its token up, so it cannot log in again later.
function M.consume(uid, token)
    if type(token) ~= "string" or token == "" then return false end
    return redis_scripts.delete_if_equal({ keys.token(uid) }, token)
end

return M

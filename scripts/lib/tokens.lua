-- lib.tokens: the chat login token the status role stores at utoken_<uid> (with a TTL) and
-- the status and chat roles check.
local host = require "host"
local keys = require "lib.keys"
local redis_scripts = require "lib.redis_scripts"

local M = {}

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

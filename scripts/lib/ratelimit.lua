-- lib.ratelimit: fixed-window counters in Redis (keys from lib.keys.rate), each living one
-- window. A check and its increment run as one Redis script, so a burst of concurrent
-- requests cannot all slip in under a limit before the first of them is counted.
local host = require "host"

local M = {}

-- KEYS: the counters; ARGV: limit and window (seconds) of each, in order.
-- Any counter at its limit: {0, seconds until its window ends} and nothing is counted.
-- Otherwise every counter goes up by one (a new one lives one window): {1, 0}.
local TAKE = [[
local wait = 0
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if tonumber(redis.call('GET', key) or '0') >= limit then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then redis.call('EXPIRE', key, window) ttl = window end
    wait = math.max(wait, ttl, 1)
  end
end
if wait > 0 then return {0, wait} end
for i, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 or redis.call('TTL', key) < 0 then
    redis.call('EXPIRE', key, ARGV[2 * i])
  end
end
return {1, 0}
]]

-- Takes one back without creating a key or touching its TTL.
local GIVE_BACK = [[
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0
]]

-- take{ {key=, limit=, window=}, ... } -> true | false, retry_after_s | nil, err
-- Counts one event against every counter, unless one of them is full already.
function M.take(counters)
    local cmd = { "EVAL", TAKE, #counters }
    for _, c in ipairs(counters) do cmd[#cmd + 1] = c.key end
    for _, c in ipairs(counters) do
        cmd[#cmd + 1] = c.limit
        cmd[#cmd + 1] = c.window
    end
    local res, err = host.redis.call(unpack(cmd))
    if not res then return nil, err end
    if res[1] == 1 then return true end
    return false, res[2]
end

-- give_back(key) -> true | nil, err: un-counts one event (a login that succeeded).
function M.give_back(key)
    local res, err = host.redis.call("EVAL", GIVE_BACK, 1, key)
    if not res then return nil, err end
    return true
end

-- clear(key) -> true | nil, err: forgets every event of the counter.
function M.clear(key)
    local res, err = host.redis.call("DEL", key)
    if not res then return nil, err end
    return true
end

-- blocked(key) -> seconds the key still lives (a "once per interval" marker) | false | nil, err
function M.blocked(key)
    local ttl, err = host.redis.call("TTL", key)
    if not ttl then return nil, err end
    if ttl == -1 then return 1 end -- exists without a TTL: should not be; never block forever
    if ttl < 0 then return false end
    return math.max(ttl, 1)
end

return M

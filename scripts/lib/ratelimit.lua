-- lib.ratelimit: fixed-window counters in Redis (keys from lib.keys.rate), each living one
-- window. A check and its increment run as one Redis script, so a burst of concurrent
-- requests cannot all slip in under a limit before the first of them is counted.
--
-- Failure budgets (admit/failed/release) count failures, not attempts: an attempt in
-- flight holds a lease in the budget's pending set (a sorted set of attempt ids scored by
-- the lease's end, so one whose process died stops counting when it ends) and is admitted
-- only while the failures plus the attempts in flight stay below the limit. An attempt that
-- succeeds gives its lease back and counts nothing; one that fails turns its lease into a
-- failure. So a burst of attempts never gets more checks than the limit allows, yet no
-- attempt is refused because of others in flight: it waits for them instead.
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

-- KEYS: failures and pending set of each budget; ARGV: limit and window (s) of each, then
-- the attempt's id and lease (ms). {0, seconds until the window ends} when a budget's
-- failures reached its limit; {2, 0} when attempts in flight could still use it up;
-- otherwise the attempt is added to every pending set: {1, 0}.
local ADMIT = [[
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = #KEYS / 2
local wait, busy = 0, false
for i = 1, n do
  local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local failures = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  if failures >= limit then
    local ttl = redis.call('TTL', KEYS[2 * i - 1])
    if ttl < 0 then redis.call('EXPIRE', KEYS[2 * i - 1], window) ttl = window end
    wait = math.max(wait, ttl, 1)
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[2 * i], '-inf', now)
    if failures + redis.call('ZCARD', KEYS[2 * i]) >= limit then busy = true end
  end
end
if wait > 0 then return {0, wait} end
if busy then return {2, 0} end
local id, lease = ARGV[2 * n + 1], tonumber(ARGV[2 * n + 2])
for i = 1, n do
  redis.call('ZADD', KEYS[2 * i], now + lease, id)
  redis.call('PEXPIRE', KEYS[2 * i], lease)
end
return {1, 0}
]]

-- KEYS: failures and pending set of each budget; ARGV: the attempt's id, then the window
-- (s) of each budget. Ends the attempt's leases and counts a failure in every budget.
local FAILED = [[
local n = #KEYS / 2
for i = 1, n do
  redis.call('ZREM', KEYS[2 * i], ARGV[1])
  if redis.call('INCR', KEYS[2 * i - 1]) == 1 or redis.call('TTL', KEYS[2 * i - 1]) < 0 then
    redis.call('EXPIRE', KEYS[2 * i - 1], ARGV[i + 1])
  end
end
return 0
]]

-- KEYS: a failure counter and its backoff marker; ARGV: window (s), failures before the
-- backoff, first and longest backoff (ms). Counts a failure; from the after-th on, the
-- marker lives first * 2^(failures - after) ms, at most longest.
local BACKOFF = [[
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local after = tonumber(ARGV[2])
if n < after then return 0 end
local ms = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(n - after, 40))
redis.call('SET', KEYS[2], n, 'PX', ms)
return ms
]]

local function budget_cmd(script, budgets, args)
    local cmd = { "EVAL", script, 2 * #budgets }
    for _, b in ipairs(budgets) do
        cmd[#cmd + 1] = b.key
        cmd[#cmd + 1] = b.pending
    end
    for _, a in ipairs(args) do cmd[#cmd + 1] = a end
    return cmd
end

-- admit(budgets, id, lease_ms) -> "admitted" | "wait" | "refused", retry_after_s | nil, err
-- budgets: { {key=failures, pending=pending set, limit=, window=}, ... }. "refused" when a
-- budget's failures reached its limit; "wait" when the attempts in flight could still use
-- it up (ask again once some ended); "admitted": the attempt holds a lease of lease_ms in
-- every budget until failed() or release().
function M.admit(budgets, id, lease_ms)
    local args = {}
    for _, b in ipairs(budgets) do
        args[#args + 1] = b.limit
        args[#args + 1] = b.window
    end
    args[#args + 1] = id
    args[#args + 1] = lease_ms
    local res, err = host.redis.call(unpack(budget_cmd(ADMIT, budgets, args)))
    if not res then return nil, err end
    if res[1] == 1 then return "admitted" end
    if res[1] == 2 then return "wait" end
    return "refused", res[2]
end

-- failed(budgets, id) -> true | nil, err: the admitted attempt failed; counted in each budget.
function M.failed(budgets, id)
    local args = { id }
    for _, b in ipairs(budgets) do args[#args + 1] = b.window end
    local res, err = host.redis.call(unpack(budget_cmd(FAILED, budgets, args)))
    if not res then return nil, err end
    return true
end

-- release(budgets, id) -> true | nil, err: the admitted attempt ended without failing.
function M.release(budgets, id)
    for _, b in ipairs(budgets) do
        local res, err = host.redis.call("ZREM", b.pending, id)
        if not res then return nil, err end
    end
    return true
end

-- backoff{key=, marker=, window=, after=, first_ms=, max_ms=} -> ms the marker lives (0:
-- none yet) | nil, err. Counts a failure at key (one window); from the after-th failure of
-- the window on, sets marker for first_ms, doubling with each further failure up to max_ms.
-- blocked(marker) then says how long to wait.
function M.backoff(b)
    return host.redis.call("EVAL", BACKOFF, 2, b.key, b.marker, b.window, b.after, b.first_ms,
        b.max_ms)
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

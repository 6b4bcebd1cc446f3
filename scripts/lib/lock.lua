-- lib.lock: a Redis lease lock (SET key owner NX PX ttl), released by compare-and-delete so
-- a holder whose lease expired never frees someone else's lock. Waiting retries with
-- exponential backoff and jitter up to a deadline; it never spins and never proceeds
-- without the lock: a caller that gets "timeout" must give up (docs/protocol.md §6).
local host = require "host"
local redis_scripts = require "lib.redis_scripts"

local M = {}

M.FIRST_DELAY_MS = 5   -- the first retry comes after ~5 ms, then 10, 20, ... capped
M.MAX_DELAY_MS = 100

-- try(key, ttl_ms) -> owner | false (held by someone else) | nil, err
function M.try(key, ttl_ms)
    local owner = host.crypto.random_hex(16)
    local res, err = host.redis.call("SET", key, owner, "NX", "PX", ttl_ms)
    if res == "OK" then return owner end
    if err then return nil, err end
    return false
end

-- The next pause: the current delay with jitter (so waiters do not retry in step), never
-- beyond the deadline.
local function pause(delay, deadline)
    local left = deadline - host.timer.monotonic()
    if left <= 0 then return false end
    local ms = math.floor(delay / 2) + host.crypto.random_uniform(math.floor(delay / 2) + 1)
    host.timer.sleep(math.max(1, math.min(ms, left)))
    return true
end

-- acquire(key, ttl_ms, wait_ms) -> owner | nil, "timeout" | nil, err
-- A Redis error is retried like a held lock until the deadline (a reconnecting pool
-- recovers within it, or the caller gets the error).
function M.acquire(key, ttl_ms, wait_ms)
    local deadline = host.timer.monotonic() + wait_ms
    local delay, last_err = M.FIRST_DELAY_MS, nil
    while true do
        local owner, err = M.try(key, ttl_ms)
        if owner then return owner end
        last_err = err
        if not pause(delay, deadline) then return nil, last_err or "timeout" end
        delay = math.min(delay * 2, M.MAX_DELAY_MS)
    end
end

-- release(key, owner) -> true (released) | false (not ours any more: it expired) | nil, err
function M.release(key, owner)
    return redis_scripts.delete_if_equal({ key }, owner)
end

-- with(key, ttl_ms, wait_ms, fn, ...) -> true, fn's results | nil, "timeout" | nil, err
-- Runs fn holding the lock and releases it whatever fn does (an error in fn is raised
-- again after the release).
function M.with(key, ttl_ms, wait_ms, fn, ...)
    local owner, err = M.acquire(key, ttl_ms, wait_ms)
    if not owner then return nil, err end
    local res = { pcall(fn, ...) }
    local released, rerr = M.release(key, owner)
    if not released then
        host.log.warn("lock ", key, " was lost before its release: ", tostring(rerr or "expired"))
    end
    if not res[1] then error(res[2], 0) end
    return true, unpack(res, 2, table.maxn(res))
end

return M

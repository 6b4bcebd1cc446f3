-- client.backoff: bounded retries with exponential backoff and jitter, for network
-- failures on the way to the gate and the chat server.
local host = require "host"

local M = {}

-- delay(attempt, min_ms, max_ms) -> ms to wait after the attempt-th failure: min_ms doubled
-- per attempt, at most max_ms, then 75%..125% of that so clients do not retry in step.
function M.delay(attempt, min_ms, max_ms)
    local d = min_ms * 2 ^ (attempt - 1)
    if d > max_ms then d = max_ms end
    return math.floor(d * (750 + host.crypto.random_uniform(501)) / 1000)
end

-- run{attempts=, min_ms=, max_ms=, sleep=fn(ms)?}(fn): calls fn(attempt) until it returns a
-- value, or a failure not marked retryable, or attempts run out; returns what fn returned
-- last (without the mark). fn -> value | nil, err, code, retryable. sleep may return false
-- to stop early (the client is closing).
function M.run(opts, fn)
    local sleep = opts.sleep or function(ms) host.timer.sleep(ms) return true end
    local attempt = 0
    while true do
        attempt = attempt + 1
        local value, err, code, retryable = fn(attempt)
        if value ~= nil or not retryable or attempt >= opts.attempts then
            return value, err, code
        end
        if sleep(M.delay(attempt, opts.min_ms, opts.max_ms)) == false then
            return value, err, code
        end
    end
end

return M

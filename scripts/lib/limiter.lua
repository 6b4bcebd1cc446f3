-- lib.limiter: at most n coroutines at a time in a section (a counting semaphore on
-- host.promise). For bursts that would otherwise flood a store, e.g. thousands of
-- sessions closing at once.
local host = require "host"

local M = {}
M.__index = M

function M.new(n)
    return setmetatable({ free = n, waiting = {}, head = 1, tail = 0 }, M)
end

-- acquire(timeout_ms) -> true | nil, "timeout"
function M:acquire(timeout_ms)
    if self.free > 0 then
        self.free = self.free - 1
        return true
    end
    local p = host.promise()
    self.tail = self.tail + 1
    self.waiting[self.tail] = p
    local ok, err = p:wait(timeout_ms)
    if not ok then
        -- still queued: a release will find it resolved-less and pass it by
        p:resolve(false)
        return nil, err
    end
    return true
end

-- release(): hands the slot to the next waiter still waiting, or frees it.
function M:release()
    while self.head <= self.tail do
        local p = self.waiting[self.head]
        self.waiting[self.head] = nil
        self.head = self.head + 1
        if p:resolve(true) then return end -- false: that waiter gave up already
    end
    self.free = self.free + 1
end

return M

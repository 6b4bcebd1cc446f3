-- client.events: what arrives unasked (applications, acceptances, messages, a kick, a lost
-- and re-established connection), either handed to a callback as it comes or kept in a
-- bounded queue for next(timeout_ms).
local host = require "host"

local M = {}
M.__index = M

-- new{on_event=fn(ev)?, max=} -> events
function M.new(opts)
    return setmetatable({ on_event = opts.on_event, max = opts.max, queue = {}, head = 1,
        tail = 0, dropped = 0 }, M)
end

function M:len() return self.tail - self.head + 1 end

function M:emit(ev)
    ev.at = ev.at or host.now()
    if self.on_event then
        local ok, err = pcall(self.on_event, ev)
        if not ok then host.log.error("client event handler: ", tostring(err)) end
        return
    end
    if self:len() >= self.max then -- nobody reads: the oldest goes, and the count says so
        self.queue[self.head] = nil
        self.head = self.head + 1
        self.dropped = self.dropped + 1
        host.log.warn("client: event queue full (", self.max, "), oldest event dropped")
    end
    self.tail = self.tail + 1
    self.queue[self.tail] = ev
    local waiter = self.waiter
    if waiter then
        self.waiter = nil
        waiter:resolve()
    end
end

-- next(timeout_ms) -> event | nil, "timeout"
function M:next(timeout_ms)
    local deadline = host.timer.monotonic() + (timeout_ms or 0)
    while self:len() == 0 do
        local left = deadline - host.timer.monotonic()
        if left <= 0 then return nil, "timeout" end
        local p = self.waiter or host.promise()
        self.waiter = p
        p:wait(left)
        if self.waiter == p and not p:resolved() then self.waiter = nil end
    end
    local ev = self.queue[self.head]
    self.queue[self.head] = nil
    self.head = self.head + 1
    if self.head > self.tail then self.head, self.tail = 1, 0 end
    return ev
end

return M

-- lib.admission: at most n callers at a time in a section, the others wait in turn (FIFO)
-- up to a deadline. Unlike lib.limiter, a slot is a lease: a holder that never releases
-- (its handler was cancelled by chat.handler_timeout_ms, which drops the coroutine with no
-- chance to clean up) loses the slot once the lease is over, so a few cancelled handlers
-- cannot shrink the section for good. A slot handed to a waiter is leased in its name by
-- the releaser, so a waiter cancelled meanwhile frees it the same way.
local host = require "host"

local M = {}
M.__index = M

-- new(n, lease_ms, on_waiting?) -> admission; on_waiting(count) is called whenever the
-- number of waiting callers changes (a gauge)
function M.new(n, lease_ms, on_waiting)
    return setmetatable({ n = n, lease_ms = lease_ms, held = {}, nheld = 0,
        queue = {}, head = 1, tail = 0, nwaiting = 0, seq = 0,
        on_waiting = on_waiting or function() end }, M)
end

-- kept(name, n, lease_ms, on_waiting?) -> the admission kept under name by host.keep, made
-- on first use: its slots and waiters outlive a hot reload (a new, empty one would let
-- twice n in for a while), and it runs this generation's code.
function M.kept(name, n, lease_ms, on_waiting)
    local a = host.keep(name)
    if a.queue == nil then
        for k, v in pairs(M.new(n, lease_ms)) do a[k] = v end
    end
    a.n, a.lease_ms, a.on_waiting = n, lease_ms, on_waiting or function() end
    return setmetatable(a, M)
end

local function lease(self)
    self.seq = self.seq + 1
    self.held[self.seq] = host.timer.monotonic()
    self.nheld = self.nheld + 1
    return self.seq
end

-- Drops the leases older than lease_ms (their holders are gone).
local function reclaim(self)
    local oldest = host.timer.monotonic() - self.lease_ms
    for slot, since in pairs(self.held) do
        if since < oldest then
            self.held[slot] = nil
            self.nheld = self.nheld - 1
            host.log.warn("admission: a slot held since ", math.floor(since),
                " was never released (its handler was cancelled): reclaimed")
        end
    end
end

-- Hands free slots to the waiters still waiting, in turn.
local function hand_over(self)
    while self.nheld < self.n and self.head <= self.tail do
        local w = self.queue[self.head]
        self.queue[self.head] = nil
        self.head = self.head + 1
        local slot = lease(self)
        if not w:resolve(slot) then -- that waiter gave up already
            self.held[slot] = nil
            self.nheld = self.nheld - 1
        end
    end
end

-- acquire(wait_ms) -> slot | nil, "timeout"
function M:acquire(wait_ms)
    if self.nheld >= self.n then reclaim(self) end
    hand_over(self) -- slots reclaimed go to those already waiting first
    if self.nheld < self.n then return lease(self) end -- (then nobody waits)
    local p = host.promise()
    self.tail = self.tail + 1
    self.queue[self.tail] = p
    self.nwaiting = self.nwaiting + 1
    self.on_waiting(self.nwaiting)
    local slot, err = p:wait(wait_ms)
    self.nwaiting = self.nwaiting - 1
    self.on_waiting(self.nwaiting)
    if not slot then
        p:resolve(false) -- still queued: hand_over passes it by
        return nil, err
    end
    return slot
end

-- release(slot): frees it (nothing if its lease was reclaimed) for the next waiter.
function M:release(slot)
    if self.held[slot] then
        self.held[slot] = nil
        self.nheld = self.nheld - 1
    end
    hand_over(self)
end

-- waiting() -> how many callers wait for a slot
function M:waiting() return self.nwaiting end

return M

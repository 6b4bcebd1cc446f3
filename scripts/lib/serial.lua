-- lib.serial: calls run one after the other, in the order posted, by a task of their own
-- (started when the first call is posted, ended when none is left), at most max waiting.
-- A post to a full queue waits for room, at most wait_ms, first come first served: the
-- poster is held back as long as the calls before it take (back-pressure), never longer.
--
--   local q = serial.new(16)
--   local ok, err = q:post(wait_ms, fn, ...)  -- true | nil, "full"
--
-- fn runs in the queue's task; an error it raises is logged and the next call goes on.
local host = require "host"

local M = {}
M.__index = M

-- A FIFO as an array with moving ends.
local function fifo() return { head = 1, tail = 0 } end

local function put(f, v)
    f.tail = f.tail + 1
    f[f.tail] = v
end

local function take(f) -- -> the oldest value | nil when empty
    if f.head > f.tail then return nil end
    local v = f[f.head]
    f[f.head] = nil
    f.head = f.head + 1
    return v
end

function M.new(max)
    assert(type(max) == "number" and max >= 1, "serial.new(max): max must be >= 1")
    -- calls: waiting to run; waiters: posts waiting for room, {call, promise, gone}
    return setmetatable({ max = max, calls = fifo(), waiters = fifo(), running = false }, M)
end

-- Nothing runs and nothing waits: a caller may act at once without passing anything.
function M:idle()
    return not self.running
end

function M:waiting()
    return self.calls.tail - self.calls.head + 1
end

-- A call left the queue: the first poster still waiting for room takes its place.
local function admit(self)
    for w in take, self.waiters do
        if not w.gone then
            put(self.calls, w.call)
            w.promise:resolve(true)
            return
        end
    end
end

local function drain(self)
    for call in take, self.calls do
        admit(self)
        local ok, err = pcall(call[1], unpack(call, 2, call.n + 1))
        if not ok then host.log.error("serial call failed: ", tostring(err)) end
    end
    self.running = false
end

-- post(wait_ms, fn, ...) -> true | nil, "full" (no room within wait_ms)
function M:post(wait_ms, fn, ...)
    local call = { fn, n = select("#", ...), ... }
    if not self.running then
        put(self.calls, call)
        self.running = true
        host.spawn(drain, self) -- runs at once, up to the call's first I/O
        return true
    end
    -- room: a call leaving admits a waiter at once, so nobody waits while there is room
    if self:waiting() < self.max then
        put(self.calls, call)
        return true
    end
    local w = { call = call, promise = host.promise() }
    put(self.waiters, w)
    if w.promise:wait(wait_ms) then return true end
    w.gone = true -- admit skips it
    return nil, "full"
end

return M

-- lib.serial: calls run one after the other, in the order posted, by a task of their own
-- (started when the first call is posted, ended when none is left), at most max waiting.
-- A post to a full queue waits for room, at most wait_ms, first come first served: the
-- poster is held back as long as the calls before it take (back-pressure), never longer.
--
--   local q = serial.new(16, on_enter?)
--   local ok, err = q:post(wait_ms, fn, ...)  -- true | nil, "full"
--
-- fn runs in the queue's task; an error it raises is logged and the next call goes on.
-- on_enter() runs each time a call enters the queue (a poster that waited for room and
-- was cancelled meanwhile still has its call entered and run, once room was made).
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

local function noop() end

function M.new(max, on_enter)
    assert(type(max) == "number" and max >= 1, "serial.new(max): max must be >= 1")
    -- calls: waiting to run; waiters: posts waiting for room, {call, promise, gone};
    -- task: the spawn handle of the task draining calls, while one does
    return setmetatable({ max = max, on_enter = on_enter or noop, calls = fifo(),
        waiters = fifo(), task = nil }, M)
end

function M:waiting()
    return self.calls.tail - self.calls.head + 1
end

local function enter(self, call)
    put(self.calls, call)
    self.on_enter()
end

-- Room was made: the posters still waiting for room take it, first come first served.
local function admit(self)
    while self:waiting() < self.max do
        local w = take(self.waiters)
        if not w then return end
        if not w.gone then
            enter(self, w.call)
            w.promise:resolve(true)
        end
    end
end

local function drain(self)
    admit(self) -- waiters left by a cancelled task
    for call in take, self.calls do
        admit(self)
        local ok, err = pcall(call[1], unpack(call, 2, call.n + 1))
        if not ok then host.log.error("serial call failed: ", tostring(err)) end
    end
    self.task = nil
end

-- A task drains the queue now? (A drain cancelled mid-call, as at shutdown, never ends by
-- itself: its handle says it is done, and the calls behind it get a new task.)
local function draining(self)
    if self.task and self.task:done() then self.task = nil end
    return self.task ~= nil
end

-- Nothing runs and nothing waits: a caller may act at once without passing anything.
function M:idle()
    return not draining(self) and self:waiting() == 0
end

-- The task's place while host.spawn runs it up to its first I/O: a call posting into its
-- own queue then must not start a second task.
local STARTING = { done = function() return false end }

local function start(self)
    self.task = STARTING
    local handle = host.spawn(drain, self)
    if self.task == STARTING then self.task = not handle:done() and handle or nil end
end

-- post(wait_ms, fn, ...) -> true | nil, "full" (no room within wait_ms). A call that
-- posts into its own full queue waits for itself: it gets "full" after wait_ms.
function M:post(wait_ms, fn, ...)
    local call = { fn, n = select("#", ...), ... }
    -- calls (or waiters) left by a cancelled task go first, in their order
    if not draining(self) and (self:waiting() > 0 or self.waiters.head <= self.waiters.tail) then
        start(self)
    end
    -- room: a call leaving admits a waiter at once, so nobody waits while there is room
    if not draining(self) or self:waiting() < self.max then
        enter(self, call)
        if not draining(self) then start(self) end
        return true
    end
    local w = { call = call, promise = host.promise() }
    put(self.waiters, w)
    if w.promise:wait(wait_ms) then return true end
    w.gone = true -- admit skips it
    return nil, "full"
end

return M

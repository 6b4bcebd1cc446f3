-- lib.fifo: a first-in first-out queue as an array with moving ends (no shifting).
--
--   local f = fifo.new(); fifo.put(f, v); fifo.take(f) -> v | nil; fifo.empty(f)
-- f.head indexes the oldest value (f[f.head]), f.tail the newest.
local M = {}

function M.new() return { head = 1, tail = 0 } end

function M.put(f, v)
    f.tail = f.tail + 1
    f[f.tail] = v
end

function M.take(f) -- -> the oldest value | nil when empty
    if f.head > f.tail then return nil end
    local v = f[f.head]
    f[f.head] = nil
    f.head = f.head + 1
    return v
end

function M.empty(f) return f.head > f.tail end

return M

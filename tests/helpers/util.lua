-- helpers.util: small helpers shared by specs.
local host = require "host"

local M = {}

-- The chathost binary under test.
function M.bin()
    return os.getenv("CHATHOST_BIN") or (host.root .. "/build/chathost")
end

-- Polls fn every step_ms until it returns a truthy value (returned) or timeout_ms passes
-- (returns nil, "timed out waiting for <what>").
function M.wait_until(fn, timeout_ms, what, step_ms)
    local deadline = host.timer.monotonic() + (timeout_ms or 5000)
    repeat
        local v = fn()
        if v then return v end
        host.timer.sleep(step_ms or 20)
    until host.timer.monotonic() > deadline
    return nil, "timed out waiting for " .. (what or "a condition")
end

-- steady(fn, what?) -> fn()'s value once it has been the same in five samples 20 ms apart
-- (a count of handles while earlier tests' close callbacks still run late on a loaded
-- machine); raises after 5 s.
function M.steady(fn, what)
    local last, same = fn(), 0
    assert(M.wait_until(function()
        local now = fn()
        same = now == last and same + 1 or 0
        last = now
        return same >= 5
    end, 5000, what or "a steady value", 20))
    return last
end

-- Runs `chathost <args...>` to completion; returns {code=, signal=, stdout=, stderr=}.
function M.chathost(args, opts)
    local argv = { M.bin() }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return assert(host.proc.run(argv, opts))
end

-- Edits the file at path in place: string.gsub(pattern, repl), which must match count
-- times (1 unless given), so a spec's edit of a copied script cannot silently miss.
function M.edit_file(path, pattern, repl, count)
    count = count or 1
    local src = assert(host.fs.read(path))
    local edited, n = src:gsub(pattern, repl)
    assert(n == count, ("%s: %d matches of %q, expected %d"):format(path, n, pattern, count))
    assert(host.fs.write(path, edited))
end

-- Writes files { ["path/rel.lua"] = "content" } under dir, creating folders.
function M.write_tree(dir, files)
    for rel, content in pairs(files) do
        local path = dir
        for part in rel:gmatch("([^/]+)/") do
            path = path .. "/" .. part
            host.fs.mkdir(path)
        end
        assert(host.fs.write(dir .. "/" .. rel, content))
    end
end

return M

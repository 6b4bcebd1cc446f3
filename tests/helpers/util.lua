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

-- Runs `chathost <args...>` to completion; returns {code=, signal=, stdout=, stderr=}.
function M.chathost(args, opts)
    local argv = { M.bin() }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return assert(host.proc.run(argv, opts))
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

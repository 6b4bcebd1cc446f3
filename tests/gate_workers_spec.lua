-- gate.workers = N: N gate processes share the HTTP port under a supervisor that restarts
-- a worker that dies and stops them all on SIGTERM.
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"
local util = require "helpers.util"

local PID_ROUTE = [[
local host = require "host"
return { routes = { ["GET /pid"] = function() return { pid = host.proc.pid() } end } }
]]

describe("multi-process gate", function()
    local gate

    setup(function()
        gate = roles.start { role = "gate", copy_scripts = true, ready = "HTTP listening",
            edit = function(dir) assert(host.fs.write(dir .. "/gate/init.lua", PID_ROUTE)) end,
            config = function(port) return { gate = { port = port, admin_port = 0, workers = 2,
                host = "127.0.0.1" } } end }
    end)

    teardown(function() gate:stop() end)

    local function pids_seen(n)
        local seen, count = {}, 0
        for _ = 1, n do
            local res = http.get(gate.port, "/pid")
            if res and res.status == 200 then
                local pid = host.json.decode(res.body).pid
                if not seen[pid] then seen[pid], count = true, count + 1 end
            end
        end
        return seen, count
    end

    -- the pids of both workers, once each has answered (fails the test otherwise)
    local function both_pids()
        local seen
        assert(util.wait_until(function()
            local count
            seen, count = pids_seen(40)
            return count == 2
        end, 5000, "both workers to answer"))
        return seen
    end

    it("spreads connections over both workers", function()
        both_pids()
    end)

    it("restarts a worker that dies", function()
        local seen = both_pids()
        local victim = next(seen)
        assert(host.proc.signal(victim, "KILL"))
        assert(util.wait_until(function()
            local now, count = pids_seen(40)
            return count == 2 and not now[victim]
        end, 10000, "a new worker"))
        assert.matches("restarting it", gate:log())
    end)

    it("stops every worker on SIGTERM and exits 0", function()
        local seen = both_pids() -- the loop below checks two workers, never none
        assert(gate.proc:kill("TERM"))
        local code = gate.proc:wait(10000)
        assert.equal(0, code)
        for pid in pairs(seen) do
            assert(util.wait_until(function() return not host.proc.signal(pid, 0) end, 5000))
        end
    end)
end)

-- Tasks: every host call yields its own coroutine and is resumed with its result.
local host = require "host"

describe("tasks", function()
    it("runs 1000 concurrent coroutines that each sleep and resume in order of deadline", function()
        local order, handles = {}, {}
        for i = 1, 1000 do
            handles[i] = host.spawn(function(n)
                host.timer.sleep((n * 7) % 50)
                order[#order + 1] = n
                return n * 2
            end, i)
        end
        for i = 1, 1000 do
            local ok, v = handles[i]:wait()
            assert.is_true(ok)
            assert.equal(i * 2, v)
        end
        assert.equal(1000, #order)
        -- deadlines are (n*7)%50: every task with a shorter sleep finished first
        for k = 2, #order do
            assert.truthy((order[k - 1] * 7) % 50 <= (order[k] * 7) % 50)
        end
    end)

    it("returns a spawned function's results through wait, or false and the error", function()
        local ok, a, b = host.spawn(function() return "x", 2 end):wait()
        assert.same({ true, "x", 2 }, { ok, a, b })
        local h = host.spawn(function() host.timer.sleep(1) error("boom", 0) end)
        local ok2, err = h:wait()
        assert.is_false(ok2)
        assert.matches("^boom", err)
    end)

    it("returns results that contain nils", function()
        local r = { host.spawn(function() host.timer.sleep(1) return nil, "x", nil end):wait() }
        assert.equal(true, r[1])
        assert.is_nil(r[2])
        assert.equal("x", r[3])
        local r2 = { host.spawn(function() return nil, "y" end):wait() }
        assert.equal("y", r2[3])
    end)

    it("wait with a timeout returns nil, 'timeout' and leaves the task running", function()
        local h = host.spawn(function() host.timer.sleep(200) return 1 end)
        local v, err = h:wait(10)
        assert.is_nil(v)
        assert.equal("timeout", err)
        assert.falsy(h:done())
        assert.same({ true, 1 }, { h:wait() })
    end)

    it("keeps running after an error in another coroutine", function()
        local h = host.spawn(function() local t = nil; return t.x end)
        local ok, err = h:wait()
        assert.is_false(ok)
        assert.matches("attempt to index", err)
        assert.matches("stack traceback", err)
        host.timer.sleep(1)
    end)

    it("refuses host I/O outside a host coroutine with a clear error", function()
        local co = coroutine.wrap(function() return pcall(host.timer.sleep, 1) end)
        local ok, err = co()
        assert.is_false(ok)
        assert.matches("must be called from a host coroutine", err)
    end)

    it("reports a bare coroutine.yield in a host coroutine as an error", function()
        local h = host.spawn(function() coroutine.yield() end)
        local ok, err = h:wait()
        assert.is_false(ok)
        assert.matches("outside host I/O", err)
    end)

    it("keeps nothing of a finished task's arguments alive in its parked coroutine", function()
        local weak = setmetatable({}, { __mode = "v" })
        local function big() local t = { ("x"):rep(1000) } weak[1] = t return t end
        assert.same({ true, 1 }, { host.spawn(function(arg) return 1 end, big()):wait() })
        collectgarbage()
        collectgarbage()
        assert.is_nil(weak[1]) -- a request or a closed session would stay alive otherwise
    end)

    it("refuses a sleep that cannot be a timer", function()
        assert.has_error(function() host.timer.sleep(math.huge) end, "must be 0..1e15")
        assert.has_error(function() host.timer.sleep(-1) end)
    end)

    it("yields across pcall", function()
        local ok, v = pcall(function() host.timer.sleep(1) return 5 end)
        assert.same({ true, 5 }, { ok, v })
        local ok2, err = pcall(function() host.timer.sleep(1) error("late", 0) end)
        assert.same({ false, "late" }, { ok2, err })
    end)
end)

describe("timers", function()
    it("fires an every() timer repeatedly until stopped", function()
        local n = 0
        local t = host.timer.every(5, function() n = n + 1 end)
        while n < 3 do host.timer.sleep(5) end
        t:stop()
        local seen = n
        host.timer.sleep(30)
        assert.equal(seen, n)
    end)

    it("skips a tick while the previous tick still runs", function()
        local running, max_running, ticks = 0, 0, 0
        local t = host.timer.every(2, function()
            running = running + 1
            ticks = ticks + 1
            if running > max_running then max_running = running end
            host.timer.sleep(15)
            running = running - 1
        end)
        while ticks < 3 do host.timer.sleep(5) end
        t:stop()
        while running > 0 do host.timer.sleep(5) end
        assert.equal(1, max_running)
    end)

    it("gives wall-clock and monotonic time in milliseconds", function()
        local now = host.now()
        assert.truthy(now > 1.7e12)
        local m0 = host.timer.monotonic()
        host.timer.sleep(20)
        assert.truthy(host.timer.monotonic() - m0 >= 19)
    end)
end)

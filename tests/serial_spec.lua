-- lib.serial: calls run one at a time in posting order by a task of the queue's own; a
-- post to a full queue waits for room (first come first served) at most its wait_ms.
local host = require "host"
local util = require "helpers.util"
local serial = dofile(host.root .. "/scripts/lib/serial.lua")

describe("serial", function()
    it("runs the posted calls one at a time, in order, without holding up the poster", function()
        local q = serial.new(10)
        assert.is_true(q:idle())
        local order, inside, max_inside = {}, 0, 0
        local function call(i, ms)
            inside = inside + 1
            if inside > max_inside then max_inside = inside end
            host.timer.sleep(ms)
            order[#order + 1] = i
            inside = inside - 1
        end
        for i = 1, 5 do assert.is_true(q:post(1000, call, i, 30 - 5 * i)) end
        -- every post returned before the first call (25 ms of sleep) could end
        assert.same({}, order)
        assert.is_false(q:idle())
        assert.equal(4, q:waiting()) -- the first is running
        assert(util.wait_until(function() return q:idle() end, 5000, "the calls"))
        assert.same({ 1, 2, 3, 4, 5 }, order)
        assert.equal(1, max_inside)
        assert.equal(0, q:waiting())
    end)

    -- A queue of max whose first call (1) runs until gate:resolve(); every call appends
    -- its number to ran. -> q, gate, ran, call
    local function blocked(max)
        local q, gate, ran = serial.new(max), host.promise(), {}
        local function call(i)
            if i == 1 then gate:wait(5000) end
            ran[#ran + 1] = i
        end
        assert.is_true(q:post(0, call, 1))
        return q, gate, ran, call
    end

    it("holds a post to a full queue until a call leaves, then takes it in", function()
        local q, gate, order, call = blocked(2)
        assert.is_true(q:post(0, call, 2))
        assert.is_true(q:post(0, call, 3)) -- 2 waiting: full
        local fourth = host.spawn(function() return q:post(5000, call, 4) end)
        local fifth = host.spawn(function() return q:post(5000, call, 5) end)
        local sixth = host.spawn(function() return q:post(5000, call, 6) end)
        assert.same({ false, false, false }, { fourth:done(), fifth:done(), sixth:done() })
        gate:resolve()
        assert.same({ true, true }, { fourth:wait(5000) })
        assert.same({ true, true }, { fifth:wait(5000) })
        assert.same({ true, true }, { sixth:wait(5000) })
        assert(util.wait_until(function() return q:idle() end, 5000, "the calls"))
        assert.same({ 1, 2, 3, 4, 5, 6 }, order)
    end)

    it("refuses a post that finds no room within its wait, and never runs it", function()
        local q, gate, ran, call = blocked(1)
        assert.is_true(q:post(0, call, 2))
        assert.same({ nil, "full" }, { q:post(0, call, 3) })
        local late = host.spawn(function() return q:post(20, call, 4) end)
        local patient = host.spawn(function() return q:post(5000, call, 5) end)
        assert.same({ true, nil, "full" }, { late:wait(5000) })
        gate:resolve()
        assert.same({ true, true }, { patient:wait(5000) }) -- the expired waiter is skipped
        assert(util.wait_until(function() return q:idle() end, 5000, "the calls"))
        assert.same({ 1, 2, 5 }, ran)
    end)

    it("goes on with the next call after one raised", function()
        local q = serial.new(4)
        local ran = {}
        assert.is_true(q:post(0, function() host.timer.sleep(1) error("call exploded") end))
        assert.is_true(q:post(0, function(a, b, c) ran[#ran + 1] = { a, b, c } end, "x", nil, 3))
        assert(util.wait_until(function() return q:idle() end, 5000, "the calls"))
        assert.same({ { "x", nil, 3 } }, ran)
    end)

    it("counts every call that enters, waiters included, and runs a call that posts into its own queue after it",
    function()
        local entered, ran = 0, {}
        local q, gate = serial.new(1, function() entered = entered + 1 end), host.promise()
        local function call(i)
            if i == 1 then
                assert.is_true(q:post(0, call, 3)) -- from inside the queue's own task
                gate:wait(5000)
            end
            ran[#ran + 1] = i
        end
        assert.is_true(q:post(0, call, 1))
        local second = host.spawn(function() return q:post(5000, call, 2) end) -- full: waits
        assert.equal(2, entered)
        gate:resolve()
        assert.same({ true, true }, { second:wait(5000) })
        assert(util.wait_until(function() return q:idle() end, 5000, "the calls"))
        assert.same({ 1, 3, 2 }, ran)
        assert.equal(3, entered)
    end)

    it("goes on after its task or a waiting poster was cancelled", function()
        local r = util.chathost({ "test", host.root .. "/tests/fixtures/serial/cancelled.lua" },
            { env = { CHATHOST_LOG_LEVEL = "off" }, timeout_ms = 20000 })
        assert.matches("^FAIL [^\n]*leaves a call hanging and a poster waiting: left behind "
            .. "[^\n]*\n1 passed, 1 failed\n$", r.stdout)
    end)

    it("rejects a bound below one", function()
        assert.has_error(function() serial.new(0) end)
    end)
end)

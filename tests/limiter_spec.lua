-- lib.limiter: a counting semaphore for coroutines.
local host = require "host"
local limiter = dofile(host.root .. "/scripts/lib/limiter.lua")

describe("limiter", function()
    it("lets at most n coroutines in at a time, in arrival order", function()
        local l = limiter.new(2)
        local inside, max_inside, order = 0, 0, {}
        local hs = {}
        for i = 1, 6 do
            hs[i] = host.spawn(function()
                assert(l:acquire(5000))
                inside = inside + 1
                if inside > max_inside then max_inside = inside end
                order[#order + 1] = i
                host.timer.sleep(5)
                inside = inside - 1
                l:release()
            end)
        end
        for i = 1, 6 do assert.is_true((hs[i]:wait())) end
        assert.equal(2, max_inside)
        assert.same({ 1, 2, 3, 4, 5, 6 }, order)
    end)

    it("times out a waiter and skips it when the slot frees", function()
        local l = limiter.new(1)
        assert(l:acquire(10))
        local v, err = l:acquire(10)
        assert.is_nil(v)
        assert.equal("timeout", err)
        local h = host.spawn(function() return l:acquire(1000) end)
        l:release()
        assert.same({ true, true }, { h:wait() })
        l:release()
        assert.equal(1, l.free)
    end)
end)

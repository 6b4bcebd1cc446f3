-- lib.admission: at most n callers in a section, the rest in turn, slots as leases.
local host = require "host"
local admission = dofile(host.root .. "/scripts/lib/admission.lua")

describe("admission", function()
    it("lets at most n callers in at a time, in arrival order, and counts the waiting", function()
        local counts = {}
        local a = admission.new(2, 60000, function(n) counts[#counts + 1] = n end)
        local inside, max_inside, order = 0, 0, {}
        local hs = {}
        for i = 1, 5 do
            hs[i] = host.spawn(function()
                local slot = assert(a:acquire(5000))
                inside = inside + 1
                if inside > max_inside then max_inside = inside end
                order[#order + 1] = i
                host.timer.sleep(5)
                inside = inside - 1
                a:release(slot)
            end)
        end
        for i = 1, 5 do assert.is_true((hs[i]:wait())) end
        assert.equal(2, max_inside)
        assert.same({ 1, 2, 3, 4, 5 }, order)
        assert.same({ 1, 2, 3, 2, 1, 0 }, counts)
        assert.equal(0, a:waiting())
    end)

    it("answers timeout to a caller that waited wait_ms, and passes it by later", function()
        local a = admission.new(1, 60000)
        local s1 = assert(a:acquire(0))
        local v, err = a:acquire(10)
        assert.is_nil(v)
        assert.equal("timeout", err)
        a:release(s1)
        assert.truthy(a:acquire(0)) -- the slot was not handed to the caller that left
    end)

    it("takes back a slot whose holder never released it once its lease is over", function()
        local a = admission.new(1, 20)
        assert(a:acquire(0)) -- never released: its handler was cancelled
        local v = a:acquire(0)
        assert.is_nil(v) -- the lease still runs
        host.timer.sleep(40)
        assert.truthy(a:acquire(0))
    end)
end)

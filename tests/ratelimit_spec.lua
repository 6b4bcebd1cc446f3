-- lib.ratelimit's failure budgets and backoff against the private Redis of tools/test.sh.
local host = require "host"
local ratelimit = dofile(host.root .. "/scripts/lib/ratelimit.lua")
local redis = host.redis

local LEASE_MS = 60000

-- A budget of limit failures per 900 s under fresh keys.
local function budget(limit)
    local id = host.crypto.random_hex(6)
    return { key = "ratelimit_spec:f:" .. id, pending = "ratelimit_spec:p:" .. id,
        limit = limit, window = 900 }
end

describe("lib.ratelimit failure budgets", function()
    it("admits attempts while failures plus those in flight stay below the limit", function()
        local b = budget(2)
        assert.equal("admitted", ratelimit.admit({ b }, "a", LEASE_MS))
        assert.equal("admitted", ratelimit.admit({ b }, "b", LEASE_MS))
        assert.equal("wait", ratelimit.admit({ b }, "c", LEASE_MS))
        assert.is_true(ratelimit.release({ b }, "a")) -- a success counts nothing
        assert.equal("admitted", ratelimit.admit({ b }, "c", LEASE_MS))
        assert.is_nil(redis.call("GET", b.key))
        local ttl = redis.call("PTTL", b.pending)
        assert.truthy(ttl > 0 and ttl <= LEASE_MS, ttl)
    end)

    it("refuses with the window's rest once the failures reach the limit", function()
        local b = budget(2)
        for _, id in ipairs({ "a", "b" }) do
            assert.equal("admitted", ratelimit.admit({ b }, id, LEASE_MS))
            assert.is_true(ratelimit.failed({ b }, id))
        end
        assert.equal("2", redis.call("GET", b.key))
        assert.equal(0, redis.call("ZCARD", b.pending))
        local verdict, retry_after = ratelimit.admit({ b }, "c", LEASE_MS)
        assert.equal("refused", verdict)
        assert.truthy(retry_after > 890 and retry_after <= 900, retry_after)
    end)

    it("admits into every budget or none, and refuses when any is full", function()
        local roomy, tight = budget(5), budget(1)
        assert.equal("admitted", ratelimit.admit({ roomy, tight }, "a", LEASE_MS))
        assert.equal("wait", ratelimit.admit({ roomy, tight }, "b", LEASE_MS))
        assert.equal(1, redis.call("ZCARD", roomy.pending))
        assert.is_true(ratelimit.failed({ roomy, tight }, "a"))
        assert.equal("refused", (ratelimit.admit({ roomy, tight }, "b", LEASE_MS)))
        assert.equal("admitted", ratelimit.admit({ roomy }, "b", LEASE_MS))
    end)

    it("stops counting an attempt in flight when its lease ends", function()
        local b = budget(1)
        assert(redis.call("ZADD", b.pending, 1, "gone")) -- a lease that ended long ago
        assert.equal("admitted", ratelimit.admit({ b }, "a", LEASE_MS))
        assert.same({ "a" }, redis.call("ZRANGE", b.pending, 0, -1))
    end)
end)

describe("lib.ratelimit backoff", function()
    it("backs off from the after-th failure, doubling up to max_ms", function()
        local id = host.crypto.random_hex(6)
        local b = { key = "ratelimit_spec:n:" .. id, marker = "ratelimit_spec:m:" .. id,
            window = 900, after = 3, first_ms = 1000, max_ms = 5000 }
        local got = {}
        for i = 1, 6 do got[i] = ratelimit.backoff(b) end
        assert.same({ 0, 0, 1000, 2000, 4000, 5000 }, got)
        local ttl = redis.call("PTTL", b.marker)
        assert.truthy(ttl > 4000 and ttl <= 5000, ttl)
        ttl = redis.call("TTL", b.key)
        assert.truthy(ttl > 890 and ttl <= 900, ttl)
        redis.call("DEL", b.key, b.marker)
    end)
end)

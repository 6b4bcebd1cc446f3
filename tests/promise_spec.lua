-- host.promise: a value coroutines wait for; the base of batching in scripts.
local host = require "host"

describe("promise", function()
    it("wakes every waiter with the resolved values", function()
        local p = host.promise()
        local hs = {}
        for i = 1, 3 do hs[i] = host.spawn(function() return p:wait() end) end
        host.timer.sleep(5)
        assert.is_true(p:resolve("a", nil, 3))
        for i = 1, 3 do assert.same({ true, "a", nil, 3 }, { hs[i]:wait() }) end
        assert.same({ "a", nil, 3 }, { p:wait() }) -- resolved: at once
        assert.is_false(p:resolve("again"))
    end)

    it("times out a wait", function()
        local p = host.promise()
        local v, err = p:wait(10)
        assert.is_nil(v)
        assert.equal("timeout", err)
        assert.is_false(p:resolved())
    end)

    it("keeps a promise alive while a task waits on it", function()
        local h = host.spawn(function() return host.promise():wait(50) end)
        collectgarbage()
        collectgarbage()
        assert.same({ true, nil, "timeout" }, { h:wait() })
    end)
end)

describe("frames", function()
    it("encode and decode with unsigned 16-bit fields", function()
        local bytes = host.frame.encode(65535, ("x"):rep(40000))
        assert.equal("\255\255\156\64", bytes:sub(1, 4))
        local id, body, used = host.frame.decode(bytes)
        assert.equal(65535, id)
        assert.equal(40000, #body)
        assert.equal(40004, used)
    end)

    it("ask for more bytes on a partial frame and refuse a body above the limit", function()
        assert.is_nil(host.frame.decode("\0\1\0"))
        assert.is_nil(host.frame.decode("\0\1\0\5abc"))
        local v, err, id, len = host.frame.decode("\3\237\255\255", 8192)
        assert.is_nil(v)
        assert.same({ "too big", 1005, 65535 }, { err, id, len })
        assert.has_error(function() host.frame.encode(70000, "") end)
        assert.has_error(function() host.frame.encode(1, ("x"):rep(70000)) end)
    end)
end)

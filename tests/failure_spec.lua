-- lib.failure: which failures a client may retry (1018) and which not (1019).
local failure = require "helpers.scripts_lib" "lib.failure"

describe("lib.failure", function()
    it("answers 1018 for busy, timeout and a Redis command never sent, 1019 otherwise", function()
        assert.equal(1018, failure.code("busy"))
        assert.equal(1018, failure.code("timeout"))
        -- the host's Redis client held or refused it: nothing reached Redis
        assert.equal(1018, failure.code("redis unavailable: connection refused"))
        assert.equal(1018, failure.code("redis unavailable: the master switched"))
        -- sent, outcome unknown, or anything else
        assert.equal(1019, failure.code("the master switched"))
        assert.equal(1019, failure.code("connection lost"))
        assert.equal(1019, failure.code(nil))
        assert.equal(1019, failure.code({ err = "x" }))
    end)
end)

-- host.log: one line per event with time, level, role and instance; level from config.
local host = require "host"
local util = require "helpers.util"

describe("logging", function()
    local lines

    setup(function()
        local r = util.chathost({ "test", host.root .. "/tests/fixtures/log/levels.lua" },
            { env = { CHATHOST_LOG_LEVEL = "info" } })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        lines = {}
        for line in r.stderr:gmatch("[^\n]+") do lines[#lines + 1] = line end
    end)

    it("writes time, level, role and message on one line per event", function()
        assert.equal(3, #lines)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ INFO  test an info line 42 table: 0x%x+ nil true$",
            lines[1])
        assert.matches(" WARN  test two | lines$", lines[2])
        assert.matches(" ERROR test an error$", lines[3])
    end)

    it("drops messages below the configured level", function()
        for _, l in ipairs(lines) do assert.is_nil(l:find("hidden debug", 1, true)) end
    end)

    it("names the route of an HTTP handler that raised", function()
        local r = util.chathost({ "exec", host.root .. "/tests/fixtures/log/route_error.lua" })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.matches(" ERROR exec error in GET /crash: [^\n]*route exploded", r.stderr)
    end)
end)

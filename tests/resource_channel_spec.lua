-- The resource channel's connection bounds (docs/protocol.md §13.1, §13.7): a frame of
-- resource.max_body_bytes is read, one byte more is answered 1016 body_len and closed; an
-- id without a handler gets no answer and the connection goes on; a connection silent for
-- resource.channel_idle_timeout_ms is closed, and none is closed for not logging in (the
-- Season 2 client connects before its chat login and sends nothing until a transfer).
local host = require "host"
local util = require "helpers.util"
local res = require "helpers.res_client"
local rc = require "helpers.res_cluster"

-- A 1045 body of exactly n bytes.
local function body_of(n)
    local head = '{"message_id":999999999,"pad":"'
    return head .. ("x"):rep(n - #head - 2) .. '"}'
end

describe("resource channel", function()
    timeout(30000)
    local role

    setup(function()
        role = rc.start { resource = { max_body_bytes = 2048, channel_idle_timeout_ms = 400 } }
    end)
    teardown(function() role:stop() end)

    it("reads a frame of max_body_bytes exactly and closes after one byte more (1016 body_len)", function()
        local c = assert(res.connect(role.port))
        assert(c:send(1045, body_of(2048)))
        local r = assert(c:wait_push(1046, 5000))
        assert.equal(1014, r.error) -- read and answered: no session on this connection
        assert(c:send(1045, body_of(2049)))
        local over = assert(c:wait_push(1046, 5000))
        assert.same({ error = 1016, field = "body_len" }, over)
        assert(util.wait_until(function() return c:closed() or select(2, c:read_frame(100)) == "closed" end,
            5000, "the close"))
        c:close()
    end)

    it("answers nothing for an unknown id and goes on serving", function()
        local c = assert(res.connect(role.port))
        assert(c:send(1001, { data = "x" }))
        local r = assert(c:request(1045, { message_id = 1 }))
        assert.equal(1014, r.error)
        assert.equal(0, #c.pushes) -- nothing came for 1001
        c:close()
    end)

    it("closes a connection silent for channel_idle_timeout_ms, never one for not logging in", function()
        local idle = assert(res.connect(role.port))
        local _, err = idle:read_frame(5000)
        assert.equal("closed", err)
        idle:close()
        local other = rc.start { resource = { channel_idle_timeout_ms = 0 } }
        local c = assert(res.connect(other.port))
        -- past what an idle bound of 400 ms took above, with no login ever
        assert.is_true(c:no_push(1046, 1500))
        assert.equal(1014, assert(c:request(1045, { message_id = 1 })).error)
        c:close()
        other:stop()
    end)
end)

describe("resource channel per address", function()
    timeout(30000)

    it("takes max_connections_per_ip connections from one address and closes the next at once", function()
        local role = rc.start { resource = { max_connections_per_ip = 2 } }
        local c1, c2 = assert(res.connect(role.port)), assert(res.connect(role.port))
        for _, c in ipairs({ c1, c2 }) do -- both served
            assert.equal(1014, assert(c:request(1045, { message_id = 1 })).error)
        end
        local c3 = assert(res.connect(role.port))
        local _, err = c3:read_frame(5000)
        assert.equal("closed", err)
        c3:close()
        c1:close() -- a slot of that address is free again once the server saw the close
        assert(util.wait_until(function()
            local c = assert(res.connect(role.port))
            local r = c:request(1045, { message_id = 1 }, 1000)
            c:close()
            return r and r.error == 1014
        end, 5000, "a slot for the address again"))
        c2:close()
        role:stop()
    end)
end)

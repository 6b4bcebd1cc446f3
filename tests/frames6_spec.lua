-- The resource channel's frames (docs/protocol.md §5.1): host.chat.serve{frame = "u16u32"}
-- reads and writes [msg_id u16 BE][body_len u32 BE][body], bodies above 65535 bytes up to
-- its max_body_bytes; host.frame and host.tcp speak the same format. And the two timeouts
-- a resource connection must be able to turn off (it is idle and anonymous until its
-- first upload).
local host = require "host"
local chat_client = require "helpers.chat_client"

local function header6(id, len)
    return string.char(math.floor(id / 256), id % 256, math.floor(len / 16777216) % 256,
        math.floor(len / 65536) % 256, math.floor(len / 256) % 256, len % 256)
end

describe("host.frame u16u32", function()
    it("encodes a 6-byte header and decodes it back", function()
        local bytes = host.frame.encode(1041, "abc", "u16u32")
        assert.equal(header6(1041, 3) .. "abc", bytes)
        local id, body, used = host.frame.decode(bytes .. "tail", nil, "u16u32")
        assert.equal(1041, id)
        assert.equal("abc", body)
        assert.equal(9, used)
        -- the default stays the 4-byte chat header
        assert.equal(string.char(4, 17, 0, 3) .. "abc", host.frame.encode(1041, "abc"))
    end)

    it("carries a body above 65535 bytes and needs all of it", function()
        local big = ("b"):rep(100000)
        local bytes = host.frame.encode(7, big, "u16u32")
        assert.equal(100006, #bytes)
        assert.is_nil(host.frame.decode(bytes:sub(1, 100005), nil, "u16u32"))
        assert.is_nil(host.frame.decode(bytes:sub(1, 5), nil, "u16u32"))
        local id, body = host.frame.decode(bytes, nil, "u16u32")
        assert.equal(7, id)
        assert.equal(big, body)
        assert.has_error(function() host.frame.encode(7, big) end)
    end)

    it("reports a header above the limit without its body", function()
        local _, err, id, len = host.frame.decode(header6(1037, 70000), 65536, "u16u32")
        assert.equal("too big", err)
        assert.equal(1037, id)
        assert.equal(70000, len)
    end)

    it("reads a frame above the client's max_buffer as an error, not a timeout", function()
        local s = assert(host.chat.serve { address = "127.0.0.1:0", frame = "u16u32",
            max_body_bytes = 1048576, handlers = function()
                return { messages = { [100] = function() return { data = ("d"):rep(200000) } end } }
            end })
        local conn = assert(host.tcp.connect("127.0.0.1", s.port,
            { timeout_ms = 5000, frame = "u16u32", max_buffer = 65536 }))
        assert(conn:send_frame(100, "{}"))
        assert.same({ nil, "frame larger than max_buffer" }, { conn:read_frame(5000) })
        conn:close()
        s:close()
    end)

    it("refuses an unknown format name", function()
        assert.has_error(function() host.frame.encode(1, "x", "u32u32") end)
        assert.has_error(function() host.tcp.connect("127.0.0.1", 1, { frame = "big" }) end)
    end)
end)

describe("chat server with frame = u16u32", function()
    local server, port
    local H = {
        messages = {
            [100] = function(session, msg) return { error = 0, n = #msg.data, head = msg.data:sub(1, 8) } end,
            [102] = function(session, msg) -- a reply and a push above 65535 bytes
                assert(session:send(2000, { data = ("p"):rep(msg.n) }))
                return { error = 0, data = ("r"):rep(msg.n) }
            end,
        },
    }

    setup(function()
        server = assert(host.chat.serve { address = "127.0.0.1:0", name = "frames6",
            frame = "u16u32", handlers = function() return H end,
            max_body_bytes = 200000, send_queue_bytes = 1048576 })
        port = server.port
    end)

    teardown(function() server:close() end)

    it("answers a request with a 6-byte header", function()
        local conn = assert(host.tcp.connect("127.0.0.1", port, { timeout_ms = 5000 }))
        assert(conn:send(host.frame.encode(100, host.json.encode({ data = "hello" }), "u16u32")))
        local head = assert(conn:read_exactly(6, 5000))
        assert.equal(101, head:byte(1) * 256 + head:byte(2))
        assert.equal("\0\0\0", head:sub(3, 5))
        local reply = assert(conn:read_exactly(head:byte(6), 5000))
        assert.same({ error = 0, n = 5, head = "hello" }, host.json.decode(reply))
        conn:close()
    end)

    it("takes a frame split across many reads", function()
        local bytes = host.frame.encode(100, host.json.encode({ data = ("s"):rep(3000) }), "u16u32")
        local conn = assert(host.tcp.connect("127.0.0.1", port, { timeout_ms = 5000, frame = "u16u32" }))
        -- the header in three pieces, then the body in pieces: each send is one segment
        -- (nodelay) and the pauses let the server read each one alone
        for _, cut in ipairs({ { 1, 1 }, { 2, 4 }, { 5, 6 }, { 7, 1000 }, { 1001, #bytes } }) do
            assert(conn:send(bytes:sub(cut[1], cut[2])))
            host.timer.sleep(20)
        end
        local id, body = conn:read_frame(5000)
        assert.equal(101, id)
        assert.same({ error = 0, n = 3000, head = "ssssssss" }, host.json.decode(body))
        conn:close()
    end)

    it("receives a 50 KB body and sends 100 KB replies and pushes", function()
        local c = assert(chat_client.connect(port, nil, "u16u32"))
        local data = ("0123456789"):rep(5000)
        assert.same({ error = 0, n = 50000, head = "01234567" }, c:request(100, { data = data }))
        local r = assert(c:request(102, { n = 100000 }))
        assert.equal(100000, #r.data)
        assert.equal(100000, #assert(c:wait_push(2000)).data)
        c:close()
    end)

    it("answers a header above max_body_bytes with 1016 on the reply id and closes", function()
        local conn = assert(host.tcp.connect("127.0.0.1", port, { timeout_ms = 5000, frame = "u16u32" }))
        assert(conn:send(header6(1037, 200001))) -- the header alone: no body is awaited
        local id, body = conn:read_frame(5000)
        assert.equal(1038, id)
        assert.same({ error = 1016, field = "body_len" }, host.json.decode(body))
        assert.equal("closed", select(2, conn:read_frame(5000)))
        conn:close()
        -- the server goes on serving others
        local c = assert(chat_client.connect(port, nil, "u16u32"))
        assert.equal(0, c:request(100, { data = "x" }).error)
        c:close()
    end)

    it("caps max_body_bytes at 16 MiB", function()
        local s = assert(host.chat.serve { address = "127.0.0.1:0", frame = "u16u32",
            handlers = function() return H end, max_body_bytes = 1073741824 })
        local conn = assert(host.tcp.connect("127.0.0.1", s.port, { timeout_ms = 5000, frame = "u16u32" }))
        assert(conn:send(header6(100, 16 * 1048576 + 1)))
        local id, body = conn:read_frame(5000)
        assert.equal(101, id)
        assert.same({ error = 1016, field = "body_len" }, host.json.decode(body))
        conn:close()
        s:close()
    end)
end)

describe("chat server timeouts set to 0", function()
    local H = { messages = { [100] = function() return { error = 0 } end } }

    -- A short handler timeout makes the sweep run every 25 ms; 300 ms is a dozen sweeps.
    local function serve(login_ms, idle_ms)
        return assert(host.chat.serve { address = "127.0.0.1:0", frame = "u16u32",
            handlers = function() return H end, handler_timeout_ms = 100,
            login_timeout_ms = login_ms, idle_timeout_ms = idle_ms })
    end

    it("keep an idle connection that never logged in", function()
        local s = serve(0, 0)
        local c = assert(chat_client.connect(s.port, nil, "u16u32"))
        host.timer.sleep(300)
        assert.is_false(c:closed())
        assert.equal(0, c:request(100, {}).error)
        host.timer.sleep(300)
        assert.equal(0, c:request(100, {}).error)
        c:close()
        s:close()
    end)

    it("while a login deadline still closes it (the same sweep is running)", function()
        local s = serve(100, 0)
        local c = assert(chat_client.connect(s.port, nil, "u16u32"))
        assert.equal("closed", select(2, c.conn:read_frame(5000)))
        c:close()
        s:close()
    end)
end)

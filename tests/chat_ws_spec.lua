-- The WebSocket transport of the chat servers (docs/protocol.md §5.5): the handshake and its
-- Origin allow-list, one text message {"id":..,"body":{..}} per chat frame both ways, and a
-- clear close code for every bad input (1009 too big, 1002 unmasked, 1007 bad UTF-8 or no
-- envelope, 1003 binary); then WebSocket and TCP users together on two chat servers.
local host = require "host"
local ws_client = require "helpers.ws_client"
local chat_client = require "helpers.chat_client"
local cluster = require "helpers.chat_cluster"
local util = require "helpers.util"
local redis = host.redis

local ORIGIN = "http://app.example:8080"

describe("chat WebSocket transport", function()
    local server, port
    local closed = {}
    local H = {
        messages = {
            [100] = function(session, msg) return { error = 0, echo = msg.x, uid = session.uid } end,
            [102] = function(session, msg)
                host.timer.sleep(msg.ms)
                return { slept = msg.ms }
            end,
            [104] = function(session, msg)
                session:bind(msg.uid)
                return { bound = session.uid }
            end,
            [108] = function(session, msg) -- pushes n messages without the client reading
                for i = 1, msg.n do
                    if not session:send(2000, { i = i, pad = ("x"):rep(1000) }) then return end
                end
            end,
            [114] = function(session, msg) session:close(msg.reason) end,
        },
        on_close = function(session, reason)
            closed[#closed + 1] = { uid = session.uid, reason = reason, id = session.id }
        end,
    }

    -- The reason on_close got for the session bound to uid, awaited.
    local function close_reason(uid)
        local reason
        assert(util.wait_until(function()
            for _, e in ipairs(closed) do
                if e.uid == uid then reason = e.reason return true end
            end
        end, 5000, "the session of " .. uid .. " to close"))
        return reason
    end

    setup(function()
        server = assert(host.chat.serve { address = "127.0.0.1:0", name = "wsspec",
            ws_address = "127.0.0.1:0", ws_origins = { ORIGIN },
            handlers = function() return H end, max_body_bytes = 1024,
            send_queue_frames = 50, send_queue_bytes = 64 * 1024,
            ws_max_message_bytes = 1024, ws_handshake_timeout_ms = 300,
            ws_handshake_max_bytes = 1024, ws_ping_interval_ms = 300 })
        port = server.ws_port
        assert.equal("number", type(port))
    end)

    teardown(function() server:close() end)

    local function connect()
        return assert(ws_client.connect(port, { origin = ORIGIN }))
    end

    it("upgrades with the RFC's accept key and answers a text message as id + 1", function()
        local c = assert(ws_client.connect(port,
            { origin = ORIGIN, key = "dGhlIHNhbXBsZSBub25jZQ==" }))
        assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", c.accept)
        assert.same({ error = 0, echo = "hi 😀" }, assert(c:request(100, { x = "hi 😀" })))
        assert.same({ bound = 77 }, assert(c:request(104, { uid = 77 })))
        assert.same({ error = 0, echo = "again", uid = 77 }, assert(c:request(100, { x = "again" })))
        c:close()
    end)

    it("refuses a handshake from an Origin not on the list, or with none, with 403", function()
        local c, err, status = ws_client.connect(port, { origin = "http://evil.example" })
        assert.is_nil(c)
        assert.equal(403, status, err)
        c, err, status = ws_client.connect(port, {})
        assert.is_nil(c)
        assert.equal(403, status, err)
        local ok = connect() -- others are served
        assert.equal("z", assert(ok:request(100, { x = "z" })).echo)
        ok:close()
    end)

    it("takes a message of ws_max_message_bytes, closes with 1009 one byte more", function()
        local function message(size) -- an envelope of exactly size bytes
            local text = '{"id":100,"body":{"x":"' .. ("a"):rep(size - 26) .. '"}}'
            assert.equal(size, #text)
            return text
        end
        local c = connect()
        assert(c:request(104, { uid = 1009 }))
        assert(c:send_ws(1, message(1024)))
        assert.equal(998, #assert(c:wait_push(101)).echo)
        assert(c:send_ws(1, message(1025)))
        assert.equal(1009, c:read_close())
        assert.equal("websocket message too big (1009)", close_reason(1009))
        c:close()
    end)

    it("reassembles a fragmented message, answering a ping between its fragments", function()
        local c = connect()
        local text = '{"id":100,"body":{"x":"in three parts"}}'
        assert(c:send_ws(1, text:sub(1, 10), { fin = false }))
        assert(c:send_ws(9, "are you there"))
        assert(c:send_ws(0, text:sub(11, 20), { fin = false }))
        assert(c:send_ws(0, text:sub(21)))
        local fin, op, payload = c:read_ws()
        assert.same({ true, 10, "are you there" }, { fin, op, payload })
        assert.same({ error = 0, echo = "in three parts" }, assert(c:wait_push(101)))
        c:close()
    end)

    it("closes with 1002 a client frame that is not masked", function()
        local c = connect()
        assert(c:request(104, { uid = 1002 }))
        assert(c:send_ws(1, '{"id":100,"body":{"x":"bare"}}', { mask = false }))
        assert.equal(1002, c:read_close())
        assert.equal("websocket protocol error (1002)", close_reason(1002))
        c:close()
    end)

    it("closes with 1007 a text message that is not UTF-8", function()
        local c = connect()
        assert(c:request(104, { uid = 1007 }))
        assert(c:send_ws(1, '{"id":100,"body":{"x":"\192\175"}}'))
        assert.equal(1007, c:read_close())
        assert.equal("websocket invalid message (1007)", close_reason(1007))
        c:close()
    end)

    it("closes with 1007 a message that is no envelope, 1003 a binary one", function()
        local c = connect()
        assert(c:send_ws(1, '{"body":{"x":1}}'))
        assert.equal(1007, c:read_close())
        c:close()
        c = connect()
        assert(c:send_ws(1, '[100]'))
        assert.equal(1007, c:read_close())
        c:close()
        c = connect()
        assert(c:send_ws(2, "\0\100\0\2{}"))
        assert.equal(1003, c:read_close())
        c:close()
    end)

    it("closes with 1007 at once a bad message that waited behind a running handler", function()
        local c = connect()
        assert(c:request(104, { uid = 1008 }))
        assert(c:send(102, { ms = 200 }))
        assert(c:send_ws(1, '{"body":{}}')) -- queued while 102 runs
        assert.same({ slept = 200 }, assert(c:wait_push(103)))
        assert.equal(1007, c:read_close())
        assert.equal("websocket invalid message (1007)", close_reason(1008)) -- not the client's close
        c:close()
    end)

    it("answers 1001 to an envelope whose body is no JSON object, and goes on", function()
        local c = connect()
        assert(c:send_ws(1, '{"id":100,"body":[1]}'))
        assert.same({ error = 1001 }, assert(c:wait_push(101)))
        assert.equal("ok", assert(c:request(100, { x = "ok" })).echo)
        c:close()
    end)

    it("reads every spelling of the envelope alike, the compact one and any other JSON", function()
        local c = connect()
        for _, text in ipairs {
            '{"id":100,"body":{"x":"a"}}',
            '{ "id" : 100 , "body" : { "x" : "a" } }',
            '{"body":{"x":"a"},"id":100}',
            '{"id":100,"body":{"x":"b"},"extra":{}}',
            '{"id":7,"body":{"x":"a"},"id":100}', -- a repeated key: the last one counts
            '{"id":100.0,"body":{"x":"a"}}',
        } do
            assert(c:send_ws(1, text))
            local r = assert(c:wait_push(101))
            assert.equal(text:find("\"b\"") and "b" or "a", r.echo)
        end
        assert(c:send_ws(1, '{"id":100,"body":{"x":"a"}}}')) -- one brace too many: no JSON
        assert.equal(1007, c:read_close())
        c:close()
        c = connect()
        assert(c:send_ws(1, '{"id":0100,"body":{"x":"a"}}')) -- no JSON number
        assert.equal(1007, c:read_close())
        c:close()
        c = connect()
        assert(c:send_ws(1, '{"id":165535,"body":{"x":"a"}}')) -- no msg_id
        assert.equal(1007, c:read_close())
        c:close()
    end)

    it("disconnects a client that never reads at the send-queue bound", function()
        local c = connect()
        assert(c:send(104, { uid = 4321 }))
        assert(c:send(108, { n = 5000 }))
        assert.equal("send queue full", close_reason(4321))
        c:close()
        local d = connect()
        assert.equal("z", assert(d:request(100, { x = "z" })).echo)
        d:close()
    end)

    it("closes a handshake not complete within ws_handshake_timeout_ms", function()
        local raw = ws_client.connect_raw(port)
        assert(raw:send("GET / HTTP/1.1\r\nHost: x\r\n")) -- and nothing more
        assert.equal("", raw:read_all(3000))
        assert(util.wait_until(function()
            for _, e in ipairs(closed) do
                if e.reason == "websocket handshake timed out" then return true end
            end
        end, 3000, "on_close of the timed-out handshake"))
        raw:close()
    end)

    it("answers 431 to a handshake above ws_handshake_max_bytes", function()
        local raw = ws_client.connect_raw(port)
        assert(raw:send("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " .. ("p"):rep(2000) .. "\r\n\r\n"))
        assert.matches("^HTTP/1%.1 431 ", raw:read_all(3000))
        raw:close()
    end)

    it("pings an open WebSocket every ws_ping_interval_ms", function()
        local c = connect()
        local fin, op = c:read_ws(3000)
        assert.same({ true, 9 }, { fin, op })
        c:close()
    end)

    it("applies the login and idle timeouts to WebSocket sessions as to TCP ones", function()
        local reasons = {}
        local short = assert(host.chat.serve { address = "127.0.0.1:0", ws_address = "127.0.0.1:0",
            ws_origins = { "*" }, login_timeout_ms = 300, idle_timeout_ms = 600,
            ws_ping_interval_ms = 0, handlers = function()
                return { messages = H.messages, on_close = function(session, reason)
                    reasons[#reasons + 1] = reason
                end }
            end })
        local never = assert(ws_client.connect(short.ws_port, { origin = "http://any.example" }))
        local silent = assert(ws_client.connect(short.ws_port))
        assert(silent:request(104, { uid = 55 })) -- logged in, then says nothing
        assert.equal("", never.conn:read_all(3000))
        assert.equal("", silent.conn:read_all(3000))
        assert(util.wait_until(function() return #reasons == 2 end, 3000, "both on_close calls"))
        table.sort(reasons)
        assert.same({ "idle", "no login in time" }, reasons)
        never:close()
        silent:close()
        short:close()
    end)

    it("closes its WebSocket sessions with 1001 when the server shuts down", function()
        local other = assert(host.chat.serve { address = "127.0.0.1:0", ws_address = "127.0.0.1:0",
            ws_origins = { "*" }, handlers = function() return H end })
        local c = assert(ws_client.connect(other.ws_port))
        assert.equal("up", assert(c:request(100, { x = "up" })).echo)
        other:close()
        assert.same({ 1001, "server shutting down" }, { c:read_close() })
        c:close()
    end)

    it("closes with 1000 and the reason when the script closes the session", function()
        local c = connect()
        assert(c:send(114, { reason = "bye now" }))
        local code, reason = c:read_close()
        assert.same({ 1000, "bye now" }, { code, reason })
        c:close()
    end)
end)

describe("chat over WebSocket and TCP across servers", function()
    local cl, chat1, chat2
    local dirs = {} -- each server's copy of the scripts, in start order

    setup(function()
        cl = cluster.start { ws = true, chat = { ws_origins = { ORIGIN } }, copy_scripts = true,
            edit = function(d) dirs[#dirs + 1] = d end }
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    teardown(function() cl:stop() end)

    local function ws_login(port, user)
        cluster.token(user)
        local c = assert(ws_client.connect(port, { origin = ORIGIN }))
        local r = assert(c:request(1005, { uid = user.uid, token = user.token }))
        assert(r.error == 0, "login of " .. user.uid .. " answered " .. host.json.encode(r))
        return c, r
    end

    it("logs in over WebSocket and exchanges texts with a TCP user on the other server",
    function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        local cb, login = ws_login(chat2.ws_port, b)
        assert.equal(b.uid, login.uid)
        local ack = assert(ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = { { content = "to the browser 😀", unique_id = "{w1}" } } }))
        assert.equal(0, ack.error)
        assert.same(ack, cb:wait_push(1019))
        local back = assert(cb:request(1017, { fromuid = b.uid, touid = a.uid, thread_id = thread,
            text_array = { { content = "from the browser", unique_id = "{w2}" } } }))
        assert.equal(0, back.error)
        local pushed, perr = ca:wait_push(1019)
        -- (seen missing twice under heavy load: the servers' logs say why if it happens again)
        assert.same(back, pushed, tostring(perr) .. "\nchat2:\n" .. chat2:log():sub(-3000)
            .. "\nchat1:\n" .. chat1:log():sub(-3000))
        assert.equal(0, cb:request(1023, { fromuid = b.uid }).error)
        ca:close()
        cb:close()
    end)

    it("announces its WebSocket port in its liveness key", function()
        for _, c in ipairs({ chat1, chat2 }) do
            local live = host.json.decode(redis.call("GET", "chatserver_" .. c.name))
            assert.same({ c.port, c.ws_port }, { live.port, live.ws_port })
        end
    end)

    it("keeps a WebSocket session across a script reload, served by the new handlers", function()
        local u = cluster.user()
        local w = ws_login(chat1.ws_port, u)
        assert.is_nil(w:request(1999, {}, 300)) -- no such message yet
        local generation = cluster.metric(chat1, "chathost_script_generation")
        util.edit_file(dirs[1] .. "/chat/init.lua", "\nreturn M%s*$", [[

M.messages[1999] = function(session) return { error = 0, reloaded = session.uid } end
return M
]])
        assert(chat1.proc:kill("HUP"))
        assert(util.wait_until(function()
            return cluster.metric(chat1, "chathost_script_generation") > generation
        end, 5000, "the reload"))
        assert.same({ error = 0, reloaded = u.uid }, assert(w:request(1999, {})))
        assert.equal(0, w:request(1023, { fromuid = u.uid }).error)
        w:close()
    end)

    it("kicks across transports and servers: 1021, then the connection closes", function()
        local u = cluster.user()
        local w = ws_login(chat1.ws_port, u)
        local t = cluster.login(chat2.port, u)
        assert.same({ error = 0, uid = u.uid }, w:wait_push(1021))
        assert.equal("close 1000", select(2, w:read_frame(2000)))
        assert.equal(chat2.name, redis.call("GET", "uip_" .. u.uid))
        local w2 = ws_login(chat1.ws_port, u)
        assert.same({ error = 0, uid = u.uid }, t:wait_push(1021))
        assert.equal("closed", select(2, t:read_frame(2000)))
        assert.equal(0, w2:request(1023, { fromuid = u.uid }).error)
        w:close()
        t:close()
        w2:close()
    end)
end)

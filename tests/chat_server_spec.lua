-- The chat connection server of the host (host.chat.serve): frames, one handler at a time
-- per session, the uid index, and a clear answer to every bad frame, over real sockets.
local host = require "host"
local chat_client = require "helpers.chat_client"
local util = require "helpers.util"

local function header(id, len)
    return string.char(math.floor(id / 256), id % 256, math.floor(len / 256), len % 256)
end

describe("chat server", function()
    local server, port
    local closed = {}
    local bind_after_close
    local H = {
        messages = {
            [100] = function(session, msg) return { error = 0, echo = msg.x, uid = session.uid } end,
            [102] = function(session, msg)
                host.timer.sleep(msg.ms or 0)
                return { n = msg.n }
            end,
            [104] = function(session, msg)
                local _, prev = session:bind(msg.uid)
                session.data.note = msg.note
                return { bound = session.uid, had_prev = prev ~= nil and prev.id or false }
            end,
            [106] = function(session) error("handler exploded") end,
            [108] = function(session, msg) -- pushes n frames without the client reading
                for i = 1, msg.n do
                    if not session:send(2000, { i = i, pad = ("x"):rep(1000) }) then return end
                end
            end,
            [110] = function(session) return { note = session.data.note, id = session.id } end,
            [116] = function(session) host.timer.sleep(5000) return { late = true } end,
            [112] = function(session)
                local ok, err = session:send(2001, { big = ("y"):rep(70000) })
                return { ok = ok or false, err = err }
            end,
            [114] = function(session, msg) session:close(msg.reason) end,
            [120] = function(session, msg) -- n pushes to each of uids, all in this pass
                for _, uid in ipairs(msg.uids) do
                    local to = host.sessions.get(uid)
                    for i = 1, msg.n do to:send(2002, { i = i }) end
                end
                return { sent = #msg.uids * msg.n }
            end,
            [118] = function(session, msg) -- binds after its session closed
                session:close("spec")
                bind_after_close = { session:bind(msg.uid) }
            end,
        },
        on_close = function(session, reason) closed[#closed + 1] = { uid = session.uid, reason = reason } end,
    }

    setup(function()
        server = assert(host.chat.serve { address = "127.0.0.1:0", name = "spec",
            handlers = function() return H end, max_body_bytes = 1024,
            send_queue_frames = 50, send_queue_bytes = 64 * 1024, idle_timeout_ms = 400,
            handler_timeout_ms = 300 })
        port = server.port
    end)

    teardown(function() server:close() end)

    it("answers a frame with the handler's table as frame id + 1", function()
        local c = assert(chat_client.connect(port))
        local r = assert(c:request(100, { x = "hi 😀" }))
        assert.same({ error = 0, echo = "hi 😀" }, r)
        c:close()
    end)

    it("handles the frames of one session in order, one at a time", function()
        local c = assert(chat_client.connect(port))
        assert(c:send(102, { ms = 50, n = 1 }))
        assert(c:send(102, { ms = 0, n = 2 }))
        assert(c:send(102, { ms = 10, n = 3 }))
        for n = 1, 3 do assert.equal(n, assert(c:wait_push(103)).n) end
        c:close()
    end)

    it("answers a body that is not a JSON object with 1001", function()
        local c = assert(chat_client.connect(port))
        for _, body in ipairs({ "not json", "[1,2]", "", '"str"' }) do
            assert(c:send(100, body))
            assert.same({ error = 1001 }, assert(c:wait_push(101)))
        end
        assert.equal("ok", assert(c:request(100, { x = "ok" })).echo) -- still served
        c:close()
    end)

    it("ignores an unknown msg_id and keeps the connection", function()
        local c = assert(chat_client.connect(port))
        assert(c:send(4242, { a = 1 }))
        assert.equal("after", assert(c:request(100, { x = "after" })).echo)
        assert.is_true(c:no_push(4243, 100))
        c:close()
    end)

    it("answers a header above the body limit with 1016 and closes without reading the body", function()
        local c = assert(chat_client.connect(port))
        assert(c:send_raw(header(100, 65535)))
        local id, body = c:read_frame()
        assert.equal(101, id)
        assert.same({ error = 1016, field = "body_len" }, body)
        local v, err = c:read_frame(2000)
        assert.is_nil(v)
        assert.equal("closed", err)
        c:close()
    end)

    it("answers 1019 when a handler raises and goes on", function()
        local c = assert(chat_client.connect(port))
        assert.same({ error = 1019 }, assert(c:request(106, {})))
        assert.equal("x", assert(c:request(100, { x = "x" })).echo)
        c:close()
    end)

    it("survives half a frame followed by a close, and serves others", function()
        local c = assert(chat_client.connect(port))
        assert(c:send_raw(header(100, 50) .. '{"x":'))
        c:close()
        local d = assert(chat_client.connect(port))
        assert.equal("y", assert(d:request(100, { x = "y" })).echo)
        d:close()
    end)

    it("takes frames split at any byte and several frames in one write", function()
        local c = assert(chat_client.connect(port))
        local bytes = host.frame.encode(100, '{"x":1}') .. host.frame.encode(100, '{"x":2}')
        for i = 1, #bytes do assert(c:send_raw(bytes:sub(i, i))) end
        assert.equal(1, assert(c:wait_push(101)).echo)
        assert.equal(2, assert(c:wait_push(101)).echo)
        c:close()
    end)

    it("completes a frame split across reads, then takes the whole frames behind it", function()
        local c = assert(chat_client.connect(port))
        local f = {}
        for i = 1, 4 do f[i] = host.frame.encode(100, ('{"x":%d,"pad":"%s"}'):format(i, ("p"):rep(i * 50))) end
        -- a header cut in two; then the rest of frame 1, frame 2 and half of frame 3 in one
        -- write; then the rest of frame 3 and frame 4
        local all = table.concat(f)
        local cut1, cut2 = 2, #f[1] + #f[2] + 20
        assert(c:send_raw(all:sub(1, cut1)))
        host.timer.sleep(20)
        assert(c:send_raw(all:sub(cut1 + 1, cut2)))
        host.timer.sleep(20)
        assert(c:send_raw(all:sub(cut2 + 1)))
        for i = 1, 4 do assert.equal(i, assert(c:wait_push(101)).echo) end
        c:close()
    end)

    it("answers a too-large header that arrives in two pieces with 1016", function()
        local c = assert(chat_client.connect(port))
        local h = header(100, 65535)
        assert(c:send_raw(h:sub(1, 3)))
        host.timer.sleep(20)
        assert(c:send_raw(h:sub(4) .. ("z"):rep(100)))
        local id, body = c:read_frame()
        assert.equal(101, id)
        assert.same({ error = 1016, field = "body_len" }, body)
        c:close()
    end)

    it("binds uids: the index finds the session, a second bind returns the first", function()
        local a = assert(chat_client.connect(port))
        local b = assert(chat_client.connect(port))
        local ra = assert(a:request(104, { uid = 777, note = "first" }))
        assert.same({ bound = 777, had_prev = false }, ra)
        assert.truthy(host.sessions.get(777))
        local rb = assert(b:request(104, { uid = 777, note = "second" }))
        assert.equal(777, rb.bound)
        assert.equal(assert(a:request(110, {})).id, rb.had_prev)
        assert.equal("second", assert(b:request(110, {})).note)
        assert.equal(assert(b:request(110, {})).id, host.sessions.get(777).id)
        assert.truthy(host.sessions.count().bound >= 1)
        a:close()
        b:close()
        assert(util.wait_until(function() return host.sessions.get(777) == nil end, 2000))
    end)

    it("writes the frames queued to a session in one pass of the loop with one write", function()
        local function writes()
            return tonumber(host.metrics.render():match('chathost_chat_writes_total{server="spec"} (%d+)'))
        end
        local a, b, c = assert(chat_client.connect(port)), assert(chat_client.connect(port)),
            assert(chat_client.connect(port))
        assert(a:request(104, { uid = 881 }))
        assert(b:request(104, { uid = 882 }))
        local before = writes()
        assert.same({ sent = 6 }, assert(c:request(120, { uids = { 881, 882 }, n = 3 })))
        for _, cl in ipairs { a, b } do
            for i = 1, 3 do assert.same({ i = i }, assert(cl:wait_push(2002))) end
        end
        -- a's three frames in one write, b's in one, c's reply in one (not 3 + 3 + 1)
        assert.equal(before + 3, writes())
        a:close() b:close() c:close()
    end)

    it("sends one push to many uids with host.sessions.send: here, and the others in order", function()
        local a, b = assert(chat_client.connect(port)), assert(chat_client.connect(port))
        assert(a:request(104, { uid = 891 }))
        assert(b:request(104, { uid = 892 }))
        local here, away = host.sessions.send({ 9001, 891, 892, 9002, 893 }, 2003, { hi = "all" }, 892)
        assert.equal(1, here)
        assert.same({ 9001, 9002, 893 }, away)
        assert.same({ hi = "all" }, assert(a:wait_push(2003)))
        assert.is_true(b:no_push(2003, 100)) -- the one left out
        assert.same({ 1, nil }, { host.sessions.send({ 891 }, 2004, '{"s":1}') })
        assert.same({ s = 1 }, assert(a:wait_push(2004)))
        assert.same({ 0, nil }, { host.sessions.send({}, 2004, {}) })
        assert.has_error(function() host.sessions.send({ "891" }, 2004, {}) end)
        assert.has_error(function() host.sessions.send({ 891 }, 70000, {}) end)
        assert.has_error(function() host.sessions.send({ 891 }, 2004, { big = ("z"):rep(70000) }) end)
        a:close() b:close()
    end)

    it("answers a bind on a closed session with nil, \"closed\", as send does, without raising", function()
        local c = assert(chat_client.connect(port))
        assert(c:send(118, { uid = 779 }))
        assert(util.wait_until(function() return bind_after_close ~= nil end, 2000, "the handler"))
        assert.same({ nil, "closed" }, bind_after_close)
        assert.is_nil(host.sessions.get(779))
        c:close()
    end)

    it("counts a uid once in sessions.count().bound when a second session takes it", function()
        local before = host.sessions.count().bound
        local a = assert(chat_client.connect(port))
        local b = assert(chat_client.connect(port))
        assert(a:request(104, { uid = 778 }))
        assert(b:request(104, { uid = 778 }))
        assert.equal(before + 1, host.sessions.count().bound)
        a:close()
        b:close()
        assert(util.wait_until(function() return host.sessions.get(778) == nil end, 2000))
        assert(util.wait_until(function() return host.sessions.count().connected == 0 end, 2000))
        assert.equal(before, host.sessions.count().bound)
    end)

    it("closes at once when close() finds the replies already sent, and stays sound", function()
        local c = assert(chat_client.connect(port))
        -- one write: the reply to 100 is queued while 114 runs, close() flushes it at once
        assert(c:send_raw(host.frame.encode(100, '{"x":"last"}') ..
            host.frame.encode(114, '{"reason":"done here"}')))
        assert.equal("last", assert(c:wait_push(101)).echo)
        local v, err = c:read_frame(2000)
        assert.is_nil(v)
        assert.equal("closed", err)
        c:close()
        assert(util.wait_until(function()
            for _, e in ipairs(closed) do if e.reason == "done here" then return true end end
        end, 2000, "on_close(done here)"))
        -- the session is collected (its coroutine slots reused first); nothing may touch it
        -- afterwards, not even the flush limit of 2 s
        for _ = 1, 8 do host.spawn(function() end) end
        collectgarbage()
        collectgarbage()
        host.timer.sleep(2200)
        local d = assert(chat_client.connect(port))
        assert.equal("ok", assert(d:request(100, { x = "ok" })).echo)
        d:close()
    end)

    it("cancels a handler that runs past handler_timeout_ms with 1019, then goes on", function()
        local c = assert(chat_client.connect(port))
        assert(c:send(116, {}))
        assert(c:send(100, { x = "next" })) -- queued behind the slow one
        local started = host.timer.monotonic()
        assert.same({ error = 1019 }, assert(c:wait_push(117, 3000)))
        assert.truthy(host.timer.monotonic() - started < 2000)
        assert.equal("next", assert(c:wait_push(101)).echo)
        c:close()
    end)

    it("refuses to send a frame above 65535 bytes", function()
        local c = assert(chat_client.connect(port))
        local r = assert(c:request(112, {}))
        assert.same({ ok = false, err = "too large" }, r)
        c:close()
    end)

    it("disconnects a client that never reads while being sent to", function()
        local c = assert(chat_client.connect(port))
        assert(c:send(104, { uid = 4321 }))
        assert(c:send(108, { n = 5000 }))
        assert(util.wait_until(function()
            for _, e in ipairs(closed) do
                if e.reason == "send queue full" and e.uid == 4321 then return true end
            end
        end, 5000, "the slow reader to be closed"))
        c:close()
        local d = assert(chat_client.connect(port)) -- others are served
        assert.equal("z", assert(d:request(100, { x = "z" })).echo)
        d:close()
    end)

    it("closes a silent connection after the idle limit and calls on_close", function()
        local c = assert(chat_client.connect(port))
        assert(c:request(104, { uid = 999 }))
        local v, err = c:read_frame(3000)
        assert.is_nil(v)
        assert.equal("closed", err)
        c:close()
        assert(util.wait_until(function()
            for _, e in ipairs(closed) do
                if e.uid == 999 and e.reason == "idle" then return true end
            end
        end, 2000, "on_close(idle)"))
    end)

    describe("a server and its sessions going away", function()
        local kept
        local function serve2()
            return assert(host.chat.serve { address = "127.0.0.1:0", name = "spec2",
                handlers = function()
                    return { messages = { [1] = function(session) kept = session return {} end } }
                end })
        end
        local function session_of(srv)
            local c = assert(chat_client.connect(srv.port))
            assert(c:request(1, {}))
            return c
        end

        -- Counted as libuv's test-tcp-close.c does: every TCP handle is closed in the end,
        -- and the session object still answers once its server is gone.
        local function tcp() return host.stats().handles.tcp or 0 end
        -- The count once earlier tests' connections have finished closing.
        local function baseline() return util.steady(tcp, "a steady handle count") end

        it("frees the server only after the handles of its closed sessions", function()
            local before = baseline()
            local srv = serve2()
            local c = session_of(srv)
            -- the listener, the session, the client's end (the session's accept may trail)
            assert(util.wait_until(function() return tcp() == before + 3 end, 2000, "3 handles"))
            kept:close() -- the session, the server, and its collection in one turn
            srv:close()
            srv = nil
            collectgarbage()
            collectgarbage()
            assert(util.wait_until(function() return tcp() == before + 1 end, 2000,
                "the server's handles"))
            local id, err = c:read_frame(1000)
            assert.is_nil(id)
            assert.equal("closed", err)
            assert.is_true(kept.closed)
            c:close()
            kept = nil
            assert(util.wait_until(function() return tcp() == before end, 2000, "the client's handle"))
        end)

        it("lets a session object outlive its collected server", function()
            local before = baseline()
            local srv = serve2()
            local c = session_of(srv)
            c:close()
            assert(util.wait_until(function() return kept.closed end, 2000))
            srv:close()
            srv = nil
            collectgarbage()
            assert(util.wait_until(function() return tcp() == before end, 2000, "every handle"))
            collectgarbage() -- the server is freed now; the session object is still held
            assert.is_true(kept.closed)
            assert.same({ nil, "closed" }, { kept:send(1, {}) })
            kept = nil
            for _ = 1, 8 do host.spawn(function() end) end
            collectgarbage()
            collectgarbage()
        end)
    end)

    -- the socket is counted here; the memory by LeakSanitizer under make asan
    it("raises on a bad option before it opens a socket or allocates", function()
        local function fds() return #assert(host.fs.list("/proc/self/fd")) end
        local before = fds()
        for _ = 1, 3 do
            local ok, err = pcall(host.chat.serve, { address = "127.0.0.1:0",
                handlers = function() return H end, idle_timeout_ms = "long" })
            assert.is_false(ok)
            assert.matches("number expected", err)
        end
        assert.equal(before, fds())
    end)
end)

-- The chat role's bounds and error paths (docs/protocol.md §5-6, chat.* in config.lua):
-- a peer chat server that is stuck (SIGSTOP) costs a push at most chat.push_timeout_ms,
-- holds up none of the sender's later requests until chat.push_queue_max of its pushes
-- wait (then it holds the sender back), and the pushes keep their order; a login waits at most
-- chat.kick_timeout_ms; a text MySQL refuses, a private chat that cannot be
-- created and a page that cannot be loaded are answered with their errors; the body size
-- and connection count limits hold at their boundaries. Real role processes, Redis and
-- MariaDB.
local host = require "host"
local util = require "helpers.util"
local chat_client = require "helpers.chat_client"
local cluster = require "helpers.chat_cluster"
local redis, db = host.redis, host.db

local function header(id, len)
    return string.char(math.floor(id / 256), id % 256, math.floor(len / 256), len % 256)
end

local function text(from, to, thread, content)
    return { fromuid = from.uid, touid = to.uid, thread_id = thread,
        text_array = { { content = content, unique_id = "u-" .. content } } }
end

local PUSH_QUEUE_MAX = 3

describe("chat with a stopped peer server", function()
    local cl, chat1, chat2
    -- the tests wait out push deadlines (2 s each, some in a row)
    timeout(30000)
    local peer -- chat2's stopper (helpers.chat_cluster)

    setup(function()
        -- short push and kick deadlines; every other gRPC deadline far longer, so only
        -- those two settings can end the calls to the stopped server within a test (the
        -- push's 2 s: far longer than a request's round trip here, so a spec can tell a
        -- reply that waited for the push from one that did not). The liveness key
        -- outlives the test: the stopped server still counts as alive. No batch window: a
        -- push to an idle peer is sent at once, alone, so the specs know which push is in
        -- flight and which wait.
        -- (push_link = false: NotifyBatch's calls; chat_push_link_spec has the link's case)
        cl = cluster.start { chat = { push_timeout_ms = 2000, kick_timeout_ms = 300,
            alive_ttl_s = 60, push_queue_max = PUSH_QUEUE_MAX, push_batch_window_ms = 0,
            push_link = false },
            config = { grpc = { deadline_ms = 60000 } } }
        chat1, chat2 = cl.chats[1], cl.chats[2]
        peer = cluster.stopper(chat2)
    end)

    after_each(function() if peer then peer.resume() end end)

    teardown(function()
        if peer then peer.resume() end
        cl:stop()
    end)

    -- a and b, friends, logged in on chat1 and chat2; one text from a is pushed to b and
    -- chat1 has the answer of that push: chat1's channel to chat2 is connected (a new
    -- connection to a stopped server fails at its connect timeout instead) and no push is
    -- in flight. -> a, b, thread, a's client, b's client
    local function pair_across()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        local cb = cluster.login(chat2.port, b)
        assert.equal(0, assert(ca:request(1017, text(a, b, thread, "before"))).error)
        assert.equal("before", assert(cb:wait_push(1019)).chat_datas[1].content)
        assert(util.wait_until(function()
            return cluster.metric(chat1, "chathost_chat_pushes_queue_done_total", 0)
                == cluster.metric(chat1, "chathost_chat_pushes_queued_total", 0)
        end, 5000, "chat1's push queues to be empty"))
        return a, b, thread, ca, cb
    end

    -- chat1's failed pushes to chat2 so far (earlier tests' are in the same log)
    local function failures()
        local _, n = chat1:log():gsub("NotifyBatch to " .. chat2.name .. " %(", "")
        return n
    end

    it("acknowledges a text to a peer there and gives up the push after push_timeout_ms",
    function()
        local a, b, thread, ca, cb = pair_across()
        peer.stop()
        local failed_before = failures()
        local lost_before = cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0)
        local ack = assert(ca:request(1017, text(a, b, thread, "while-stopped")))
        assert.equal(0, ack.error)
        assert.equal(1, #ack.chat_datas)
        -- the push waits for its deadline in the session's push queue, not in the session:
        -- the next request is answered while the push has not failed yet
        assert.same({ error = 0 }, ca:request(1023, { fromuid = a.uid }))
        assert.equal(failed_before, failures())
        local row = assert(db.query("SELECT content, recv_id FROM chat_message WHERE message_id = ?",
            ack.chat_datas[1].message_id))[1]
        assert.same({ "while-stopped", b.uid }, { row.content, row.recv_id })
        -- the push through the stopped server fails at its own deadline (gRPC's is 60 s):
        -- push.call logs the failed call
        assert(util.wait_until(function() return failures() > failed_before end, 5000,
            "the push to fail"))
        local logged = {}
        for l in chat1:log():gmatch("NotifyBatch to " .. chat2.name .. " %([^\n]*") do
            logged[#logged + 1] = l
        end
        assert.matches("failed: .*%(4%)$", logged[#logged]) -- 4: DEADLINE_EXCEEDED
        -- b is still chat2's: the push is given up, counted and logged
        assert(util.wait_until(function()
            return cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0) > lost_before
        end, 5000, "the push to be given up"))
        assert.matches("pushes to " .. chat2.name .. " given up: 1 %([^\n]*stored%)", chat1:log())
        -- and the sender's session is served again
        assert.same({ error = 0 }, ca:request(1023, { fromuid = a.uid }))
        ca:close()
        cb:close()
    end)

    it("holds a sender back once chat.push_queue_max pushes wait, and keeps their order",
    function()
        local a, b, thread, ca, cb = pair_across()
        peer.stop()
        local failed_before = failures()
        -- q1's push is in flight to the stopped server, q2..q4 wait behind it: all
        -- acknowledged before that push's deadline (2 s) ends
        local t0 = host.timer.monotonic()
        for i = 1, PUSH_QUEUE_MAX + 1 do
            assert.equal(0, assert(ca:request(1017, text(a, b, thread, "q" .. i))).error)
        end
        assert.equal(failed_before, failures())
        -- the queue is full: q5 is acknowledged (stored) at once, but its handler then waits
        -- for room, so its session answers the next request only once q1's push has ended
        local five = assert(ca:request(1017, text(a, b, thread, "q" .. PUSH_QUEUE_MAX + 2)))
        assert.equal(0, five.error)
        assert.same({ error = 0 }, ca:request(1023, { fromuid = a.uid }))
        assert.truthy(host.timer.monotonic() - t0 >= 2000) -- a lower bound: q1's deadline
        assert(util.wait_until(function() return failures() > failed_before end, 5000,
            "q1's push to fail"))
        peer.resume() -- well before the deadline of q2's push, now in flight
        local got = {}
        while true do
            local push = cb:wait_push(1019, 1000)
            if not push then break end
            local content = push.chat_datas[1].content
            -- q1 may still arrive: its call reached the stopped server before its deadline
            if content ~= "q1" then got[#got + 1] = content end
        end
        assert.same({ "q2", "q3", "q4", "q5" }, got)
        assert.equal(0, cluster.metric(chat1, "chathost_chat_pushes_dropped_total", 0))
        ca:close()
        cb:close()
    end)

    it("pushes to a user here at once while the pushes to the stopped server wait", function()
        local a, b, ab, ca, cb = pair_across()
        local c = cluster.user()
        local ac = cluster.befriend(a, c)
        local cc = cluster.login(chat1.port, c)
        peer.stop()
        local failed_before = failures()
        -- the queue to chat2 full: one push in flight, PUSH_QUEUE_MAX waiting
        for i = 1, PUSH_QUEUE_MAX + 1 do
            assert.equal(0, assert(ca:request(1017, text(a, b, ab, "far" .. i))).error)
        end
        assert.equal(0, assert(ca:request(1017, text(a, c, ac, "near"))).error)
        assert.equal("near", assert(cc:wait_push(1019, 1000)).chat_datas[1].content)
        assert.equal(failed_before, failures()) -- the push in flight to chat2 has not ended
        ca:close()
        cb:close()
        cc:close()
    end)

    it("delivers the pushes that waited for the stopped server to the user's new login",
    function()
        local a, b, thread, ca, cb = pair_across()
        peer.stop()
        for i = 1, 2 do
            assert.equal(0, assert(ca:request(1017, text(a, b, thread, "moved" .. i))).error)
        end
        -- b logs in again on chat1 (the kick of its chat2 session times out): each push
        -- to chat2 fails at its deadline and then finds b here
        local nb = cluster.login(chat1.port, b)
        assert.equal("moved1", assert(nb:wait_push(1019, 8000)).chat_datas[1].content)
        assert.equal("moved2", assert(nb:wait_push(1019, 8000)).chat_datas[1].content)
        ca:close()
        cb:close()
        nb:close()
    end)

    it("logs in a user of the stopped server elsewhere once the kick times out", function()
        local u = cluster.user()
        -- logins that kick across both servers first: chat1's channel to chat2 is
        -- connected (a new connection to a stopped server fails at its connect timeout)
        local hop = cluster.login(chat2.port, u)
        local hop2 = cluster.login(chat1.port, u)
        assert.same({ error = 0, uid = u.uid }, hop:wait_push(1021))
        local old = cluster.login(chat2.port, u)
        assert.same({ error = 0, uid = u.uid }, hop2:wait_push(1021))
        hop:close()
        hop2:close()
        assert.equal(chat2.name, redis.call("GET", "uip_" .. u.uid))
        peer.stop()
        -- cluster.login waits 5 s for the 1006: the kick must end at kick_timeout_ms
        local new = cluster.login(chat1.port, u)
        assert.equal(chat1.name, redis.call("GET", "uip_" .. u.uid))
        assert.truthy(chat1:await("login uid=" .. u.uid .. ": kicked on " .. chat2.name
            .. ": no answer", 1000))
        assert.same({ error = 0 }, new:request(1023, { fromuid = u.uid }))
        new:close()
        old:close()
    end)
end)

describe("chat store and load failures", function()
    local cl, chat1, chat2, small

    setup(function()
        cl = cluster.start()
        chat1, chat2 = cl.chats[1], cl.chats[2]
        -- a server whose MySQL results may not exceed 4 KiB: a page of long messages fails
        small = cluster.start_chat { config = { mysql = { max_result_bytes = 4096 } } }
    end)

    after_each(function()
        assert(db.exec("DROP TRIGGER IF EXISTS t_chatlimits_refuse_message"))
        assert(db.exec("DROP TRIGGER IF EXISTS t_chatlimits_refuse_thread"))
    end)

    teardown(function()
        small:stop()
        cl:stop()
    end)

    it("answers a text that cannot be stored with an error and pushes nothing", function()
        local a, b, c = cluster.user(), cluster.user(), cluster.user()
        local ab, ac = cluster.befriend(a, b), cluster.befriend(a, c)
        local ca = cluster.login(chat1.port, a)
        local cb = cluster.login(chat2.port, b) -- pushed to through chat2
        local cc = cluster.login(chat1.port, c) -- pushed to on chat1 itself
        assert(db.exec([[CREATE TRIGGER t_chatlimits_refuse_message BEFORE INSERT ON chat_message
            FOR EACH ROW IF NEW.content LIKE 'refuse-me%' THEN
                SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by chat_limits_spec';
            END IF]]))
        for _, to in ipairs({ { b, ab }, { c, ac } }) do
            local ack = assert(ca:request(1017, text(a, to[1], to[2], "refuse-me-" .. to[1].uid)))
            assert.equal(1019, ack.error) -- not retryable: Internal (docs/protocol.md §2)
            assert.is_nil(ack.chat_datas)
        end
        assert.equal(0, cluster.count("SELECT COUNT(*) AS n FROM chat_message"
            .. " WHERE content LIKE 'refuse-me%' AND sender_id = ?", a.uid))
        assert(db.exec("DROP TRIGGER t_chatlimits_refuse_message"))
        -- the next texts are stored and pushed, and they are the first pushes to arrive
        for _, to in ipairs({ { b, ab, cb }, { c, ac, cc } }) do
            assert.equal(0, ca:request(1017, text(a, to[1], to[2], "stored")).error)
            assert.equal("stored", assert(to[3]:wait_push(1019)).chat_datas[1].content)
            assert.is_true(to[3]:no_push(1019, 200))
        end
        ca:close()
        cb:close()
        cc:close()
    end)

    it("answers 1012 when the private chat cannot be created, then creates it", function()
        local a, b = cluster.user(), cluster.user()
        cluster.befriend(a, b, { thread = false })
        local ca = cluster.login(chat1.port, a)
        assert(db.exec(([[CREATE TRIGGER t_chatlimits_refuse_thread BEFORE INSERT ON private_chat
            FOR EACH ROW IF NEW.user1_id = %d THEN
                SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by chat_limits_spec';
            END IF]]):format(math.min(a.uid, b.uid))))
        assert.same({ error = 1012, uid = a.uid, other_id = b.uid },
            ca:request(1027, { uid = a.uid, other_id = b.uid }))
        local pair = "SELECT COUNT(*) AS n FROM private_chat WHERE user1_id = ? AND user2_id = ?"
        local u1, u2 = math.min(a.uid, b.uid), math.max(a.uid, b.uid)
        assert.equal(0, cluster.count(pair, u1, u2))
        assert(db.exec("DROP TRIGGER t_chatlimits_refuse_thread"))
        local ok = ca:request(1027, { uid = a.uid, other_id = b.uid })
        assert.equal(0, ok.error)
        assert.equal(1, cluster.count(pair, u1, u2))
        ca:close()
    end)

    it("answers 1013 when a page of messages cannot be loaded, and keeps the session", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        for i = 1, 4 do -- 12 KB of content: above the server's max_result_bytes
            assert(db.exec("INSERT INTO chat_message (thread_id, sender_id, recv_id, content,"
                .. " created_at, status, msg_type) VALUES (?, ?, ?, ?, NOW(), 2, 0)",
                thread, b.uid, a.uid, ("long%d "):format(i) .. ("x"):rep(3000)))
        end
        local ca = cluster.login(small.port, a)
        assert.same({ error = 1013, thread_id = thread },
            ca:request(1029, { thread_id = thread, message_id = 0 }))
        assert.same({ error = 0 }, ca:request(1023, { fromuid = a.uid }))
        ca:close()
    end)
end)

describe("chat body and connection limits", function()
    local MAX_CONNECTIONS = 4
    local chat

    setup(function()
        -- max_body_bytes is left at its default (8192, docs/protocol.md §5)
        chat = cluster.start_chat { chat = { max_connections = MAX_CONNECTIONS } }
    end)

    teardown(function() chat:stop() end)

    it("takes a body of max_body_bytes and refuses one byte more with 1016, closing", function()
        local u = cluster.user()
        local c = cluster.login(chat.port, u)
        local head = ('{"fromuid":%d,"pad":"'):format(u.uid)
        local body = head .. ("p"):rep(8192 - #head - 2) .. '"}'
        assert.equal(8192, #body)
        assert(c:send(1023, body))
        assert.same({ error = 0 }, c:wait_push(1024))
        assert(c:send_raw(header(1023, 8193))) -- the header alone: it is refused unread
        assert.same({ error = 1016, field = "body_len" }, c:wait_push(1024))
        assert.equal("closed", select(2, c:read_frame(2000)))
        c:close()
    end)

    it("closes a connection beyond max_connections and serves the others", function()
        local open = {}
        for i = 1, MAX_CONNECTIONS do
            open[i] = assert(chat_client.connect(chat.port))
            assert.same({ error = 1014 }, open[i]:request(1023, {})) -- served (not logged in)
        end
        -- the kernel accepts it, the server answers the login it is about to wait for with
        -- 1018 (busy: retry through the gate) and closes it
        local extra = assert(chat_client.connect(chat.port))
        assert.same({ error = 1018, message = "chat server full" }, extra:wait_push(1006, 3000))
        local id, err = extra:read_frame(3000)
        assert.is_nil(id)
        assert.equal("closed", err)
        extra:close()
        for i = 1, MAX_CONNECTIONS do
            assert.same({ error = 1014 }, open[i]:request(1023, {}))
        end
        -- one closes: a new connection is served again
        open[1]:close()
        local again = assert(util.wait_until(function()
            local c = assert(chat_client.connect(chat.port))
            if c:request(1023, {}, 500) then return c end
            c:close()
        end, 3000, "a connection to be served again"))
        assert.same({ error = 1014 }, again:request(1023, {}))
        again:close()
        for i = 2, MAX_CONNECTIONS do open[i]:close() end
    end)
end)

describe("chat connections that do not log in", function()
    local chat

    setup(function()
        chat = cluster.start_chat { chat = { login_timeout_ms = 300, max_connections = 10000000 } }
    end)

    teardown(function() chat:stop() end)

    it("lowers max_connections to the open-file limit minus chat.fd_reserve, saying so", function()
        chat:await("max_connections 10000000 lowered to %d+ %(open%-file limit %d+ minus " ..
            "chat.fd_reserve 256%)")
    end)

    it("closes a connection that has not logged in within login_timeout_ms", function()
        local idle = assert(chat_client.connect(chat.port))
        local id, err = idle:read_frame(5000) -- closed by the server, long before our 5 s
        assert.is_nil(id)
        assert.equal("closed", err)
        idle:close()
    end)

    it("keeps a logged-in connection past login_timeout_ms", function()
        local u = cluster.user()
        local c = cluster.login(chat.port, u)
        assert.is_true(c:no_push(1024, 900)) -- three login deadlines: nothing, and still open
        assert.same({ error = 0 }, c:request(1023, { fromuid = u.uid }))
        c:close()
    end)
end)

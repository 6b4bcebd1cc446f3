-- The chat role's bounds and error paths (shared/PROTOCOL.md §5-6, chat.* in config.lua):
-- a peer chat server that is stuck (SIGSTOP) costs a push at most chat.push_timeout_ms and
-- a login at most chat.kick_timeout_ms. Real role processes, Redis and MariaDB.
local host = require "host"
local cluster = require "helpers.chat_cluster"
local redis, db = host.redis, host.db

local function text(from, to, thread, content)
    return { fromuid = from.uid, touid = to.uid, thread_id = thread,
        text_array = { { content = content, unique_id = "u-" .. content } } }
end

describe("chat with a stopped peer server", function()
    local cl, chat1, chat2
    local stopped = false

    local function stop_chat2()
        assert(chat2.proc:kill("STOP"))
        stopped = true
    end

    local function resume_chat2()
        if stopped then
            assert(chat2.proc:kill("CONT"))
            stopped = false
        end
    end

    setup(function()
        -- short push and kick deadlines; every other gRPC deadline far longer, so only
        -- those two settings can end the calls to the stopped server within a test. The
        -- liveness key outlives the test: the stopped server still counts as alive.
        cl = cluster.start { chat = { push_timeout_ms = 300, kick_timeout_ms = 300,
            alive_ttl_s = 60 }, config = { grpc = { deadline_ms = 60000 } } }
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    after_each(resume_chat2)

    teardown(function()
        resume_chat2()
        cl:stop()
    end)

    it("acknowledges a text to a peer there and gives up the push after push_timeout_ms",
    function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        local cb = cluster.login(chat2.port, b)
        -- a push while chat2 runs: delivered, and chat1's channel to chat2 is connected
        -- (a new connection to a stopped server fails at its connect timeout instead)
        local first = assert(ca:request(1017, text(a, b, thread, "before")))
        assert.equal(0, first.error)
        assert.equal("before", assert(cb:wait_push(1019)).chat_datas[1].content)
        -- a session's frames are handled one after the other: this reply means the first
        -- text's handler has its push's answer (else chat2 may be stopped before sending it)
        assert.same({ error = 0 }, ca:request(1023, { fromuid = a.uid }))
        stop_chat2()
        local ack = assert(ca:request(1017, text(a, b, thread, "while-stopped")))
        assert.equal(0, ack.error)
        assert.equal(1, #ack.chat_datas)
        local row = assert(db.query("SELECT content, recv_id FROM chat_message WHERE message_id = ?",
            ack.chat_datas[1].message_id))[1]
        assert.same({ "while-stopped", b.uid }, { row.content, row.recv_id })
        -- the push through the stopped server fails at its own deadline (gRPC's is 60 s)
        assert(chat1:await("1019 to uid " .. b.uid .. " failed", 5000))
        assert.matches("NotifyTextChatMsg to " .. chat2.name, chat1:log())
        -- and the sender's session is served again
        assert.same({ error = 0 }, ca:request(1023, { fromuid = a.uid }))
        ca:close()
        cb:close()
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
        stop_chat2()
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

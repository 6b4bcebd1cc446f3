-- The push link between chat servers (chat.link, docs/protocol.md §6.7): pushes for a
-- peer's users go over one TCP connection to the peer's client port, opened only with the
-- proof of grpc.secret; each sender's pushes keep their order; at most
-- chat.push_link_window batches are unanswered; a peer that stops answering costs the
-- pushes in flight (given up after chat.push_timeout_ms, counted) and a new link is
-- opened; a peer whose client port does not answer gets NotifyBatch; an idle link is kept
-- alive by pings; a reload dials a new link. Real chat servers, status, Redis, MariaDB.
local host = require "host"
local util = require "helpers.util"
local chat_client = require "helpers.chat_client"
local cluster = require "helpers.chat_cluster"
local redis = host.redis

local BATCH = { method = "ChatService.NotifyBatch" }
local CALLS = "chathost_grpc_client_calls_total"
local OPENED = "chathost_chat_push_link_opened_total"
local BATCHES = "chathost_chat_push_link_batches_total"
local ITEMS = "chathost_chat_push_link_items_total"
local FAILURES = "chathost_chat_push_link_failures_total"

local text, pair, said = cluster.text, cluster.pair, cluster.said

local function mac(nonce, dialler, peer)
    return host.crypto.hmac_sha256(host.config.grpc.secret,
        "chathost push link|" .. nonce .. "|" .. dialler .. "|" .. peer)
end

-- the answering server's proof in 1204
local function answer_mac(dnonce, nonce, peer, dialler)
    return host.crypto.hmac_sha256(host.config.grpc.secret,
        "chathost push link answer|" .. dnonce .. "|" .. nonce .. "|" .. peer .. "|" .. dialler)
end

-- Every push of role has ended (answered, or given up).
local function settled(role) cluster.settled(role, 8000) end

-- A peer server announced as name with its client port at port (what a push link dials)
-- and its gRPC a server in this process that takes every NotifyBatch item and records its
-- touid in got: -> got, close() (the announcement and the server gone)
local function announced(name, port)
    local got = {}
    local grpc = assert(host.grpc.serve { address = "127.0.0.1:0", handlers = {
        ["ChatService.NotifyBatch"] = function(req)
            local errors = {}
            for i, it in ipairs(req.items) do
                got[#got + 1] = it.touid
                errors[i] = 0
            end
            return { error = 0, errors = errors }
        end } })
    assert(redis.call("SET", "chatserver_" .. name, host.json.encode { host = "127.0.0.1",
        port = port, rpc = "127.0.0.1:" .. grpc.port }, "EX", 600))
    return got, function()
        redis.call("DEL", "chatserver_" .. name)
        grpc:close()
    end
end

-- a logged in on the chat server at port and c, friends, Redis placing c on server name:
-- -> a, c, thread, a's client
local function sender_to(port, name)
    local a, c = cluster.user(), cluster.user()
    local thread = cluster.befriend(a, c)
    local ca = cluster.login(port, a)
    assert(redis.call("SET", "uip_" .. c.uid, name, "EX", 600))
    return a, c, thread, ca
end

describe("chat push link", function()
    local cl, chat1, chat2
    local peer -- chat2's stopper (helpers.chat_cluster)
    timeout(30000)
    local WINDOW, PUSH_TIMEOUT_MS, LOGIN_TIMEOUT_MS = 2, 1500, 1000

    setup(function()
        -- no batch window: a push to an idle peer leaves at once, alone; every gRPC deadline
        -- far longer than chat.push_timeout_ms
        cl = cluster.start { chat = { push_batch_window_ms = 0, push_link_window = WINDOW,
            push_timeout_ms = PUSH_TIMEOUT_MS, login_timeout_ms = LOGIN_TIMEOUT_MS,
            alive_ttl_s = 60 }, config = { grpc = { deadline_ms = 60000 } } }
        chat1, chat2 = cl.chats[1], cl.chats[2]
        peer = cluster.stopper(chat2)
    end)

    -- A pair across the servers whose first text (first) went through and was answered:
    -- the link is up and idle -> a, b, thread, ca, cb
    local function linked_pair(first)
        local a, b, thread, ca, cb = pair(chat1.port, chat2.port)
        said(ca, cb, a, b, thread, first)
        settled(chat1)
        return a, b, thread, ca, cb
    end

    after_each(function() if peer then peer.resume() end end)

    teardown(function()
        if peer then peer.resume() end
        cl:stop()
    end)

    it("carries the pushes of many senders over one link, each sender's in order, no call", function()
        local n, k = 6, 8
        local ca, cb, a, b, th = {}, {}, {}, {}, {}
        for i = 1, n do a[i], b[i], th[i], ca[i], cb[i] = pair(chat1.port, chat2.port) end
        said(ca[1], cb[1], a[1], b[1], th[1], "warm") -- (by NotifyBatch while the link opens)
        assert(util.wait_until(function() return cluster.metric(chat1, OPENED, 0) == 1 end, 5000,
            "the link to open"))
        settled(chat1)
        local items, calls = cluster.metric(chat1, ITEMS, 0), cluster.metric(chat1, CALLS, 0, BATCH)
        for j = 1, k do
            for i = 1, n do assert(ca[i]:send(1017, text(a[i], b[i], th[i], i .. "." .. j))) end
        end
        for i = 1, n do
            for _ = 1, k do assert.equal(0, assert(ca[i]:wait_push(1018, 5000)).error) end
            for j = 1, k do
                assert.equal(i .. "." .. j, assert(cb[i]:wait_push(1019, 5000)).chat_datas[1].content)
            end
        end
        settled(chat1)
        assert.equal(n * k, cluster.metric(chat1, ITEMS, 0) - items)
        assert.equal(calls, cluster.metric(chat1, CALLS, 0, BATCH))
        assert.equal(1, cluster.metric(chat1, OPENED, 0))
        for i = 1, n do
            ca[i]:close()
            cb[i]:close()
        end
    end)

    it("opens a link only with the proof of grpc.secret", function()
        -- a wrong proof: 1015, closed
        local c = assert(chat_client.connect(chat2.port))
        local hello = assert(c:request(1201, { name = "intruder" }))
        assert.equal(0, hello.error)
        assert.equal(chat2.name, hello.name)
        assert.matches("^%x+$", hello.nonce)
        assert.equal(32, #hello.nonce)
        assert.same({ error = 1015 }, c:request(1203, { mac = mac(hello.nonce, "other", chat2.name) }))
        assert(util.wait_until(function() return c:closed() or not c:read_frame(100) end, 3000,
            "the connection to close"))
        -- no opening: the link's messages are refused
        local d = assert(chat_client.connect(chat2.port))
        assert.same({ error = 1016, field = "msg_id" }, d:request(1203, { mac = "00" }))
        assert.same({ error = 1015 }, d:request(1205, { items = {} }))
        assert.same({ error = 1015 }, d:request(1207, {}))
        -- a replayed proof (another opening's nonce) is worth nothing
        local old = hello.nonce
        local e = assert(chat_client.connect(chat2.port))
        assert.equal(0, assert(e:request(1201, { name = "replay" })).error)
        assert.same({ error = 1015 }, e:request(1203, { mac = mac(old, "replay", chat2.name) }))
        e:close()
        -- the right proof: the session takes pushes, answers which reached nobody
        local b = cluster.user()
        local cb = cluster.login(chat2.port, b)
        local l = assert(chat_client.connect(chat2.port))
        hello = assert(l:request(1201, { name = "spec" }))
        -- without its own nonce the dialler gets no proof back: refused
        assert.same({ error = 1016, field = "nonce" },
            l:request(1203, { mac = mac(hello.nonce, "spec", chat2.name) }))
        hello = assert(l:request(1201, { name = "spec" }))
        -- its frames may be as big as the format carries (chat.max_body_bytes: 8 KiB), and
        -- the answer proves chat2 knows the secret too, over both nonces
        local dnonce = host.crypto.random_hex(16)
        local ok = assert(l:request(1203, { mac = mac(hello.nonce, "spec", chat2.name), nonce = dnonce }))
        assert.same({ error = 0, max_body = 65535,
            mac = answer_mac(dnonce, hello.nonce, chat2.name, "spec") }, ok)
        local body = host.json.encode { fromuid = 1, touid = b.uid, chat_datas = { { content = "linked" } } }
        local r = assert(l:request(1205, { items = {
            { u = b.uid, m = 1019, b = body },
            { u = 999999999, m = 1019, b = body }, -- nobody here
            { u = b.uid, m = 1017, b = body },     -- not a push
        } }))
        assert.equal(0, r.error)
        assert.same({ 2, 3 }, r.missed)
        assert.equal("linked", assert(cb:wait_push(1019, 3000)).chat_datas[1].content)
        assert.truthy(cb:no_push(1017, 200))
        local big = string.rep("x", 30000)
        r = assert(l:request(1205, { items = { { u = b.uid, m = 1019, b = host.json.encode {
            fromuid = 1, touid = b.uid, chat_datas = { { content = big } } } } } }))
        assert.same({ error = 0, missed = {} }, r)
        assert.equal(big, assert(cb:wait_push(1019, 3000)).chat_datas[1].content)
        -- past chat.login_timeout_ms the link stays, an opening that gave no proof does not
        local idle = assert(chat_client.connect(chat2.port))
        assert.equal(0, assert(idle:request(1201, { name = "slow" })).error)
        host.timer.sleep(LOGIN_TIMEOUT_MS + 1500)
        assert.same({ error = 0 }, l:request(1207, {}))
        assert(util.wait_until(function() return idle:closed() or not idle:read_frame(100) end,
            3000, "the unproven opening to close"))
        c:close()
        idle:close()
        d:close()
        l:close()
        cb:close()
    end)

    it("is not opened by a logged-in user's session", function()
        local a = cluster.user()
        local ca = cluster.login(chat2.port, a)
        assert.same({ error = 1016, field = "msg_id" }, ca:request(1201, { name = "me" }))
        ca:close()
    end)

    it("sends at most chat.push_link_window batches unanswered", function()
        local n = WINDOW + 2
        local ca, cb, a, b, th = {}, {}, {}, {}, {}
        for i = 1, n do a[i], b[i], th[i], ca[i], cb[i] = pair(chat1.port, chat2.port) end
        said(ca[1], cb[1], a[1], b[1], th[1], "warm")
        settled(chat1)
        local batches = cluster.metric(chat1, BATCHES, 0)
        peer.stop()
        -- one push at a time, each acked (its batch sent alone) before the next
        for i = 1, n do
            assert.equal(0, assert(ca[i]:request(1017, text(a[i], b[i], th[i], "w" .. i))).error)
        end
        assert(util.wait_until(function()
            return cluster.metric(chat1, BATCHES, 0) - batches == WINDOW
        end, 3000, "the window's batches to be sent"))
        host.timer.sleep(300)
        assert.equal(WINDOW, cluster.metric(chat1, BATCHES, 0) - batches)
        peer.resume() -- well before chat.push_timeout_ms
        for i = 1, n do
            assert.equal("w" .. i, assert(cb[i]:wait_push(1019, 5000)).chat_datas[1].content)
        end
        settled(chat1)
        assert.equal(0, cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0))
        for i = 1, n do
            ca[i]:close()
            cb[i]:close()
        end
    end)

    it("holds a sender back once chat.push_queue_max pushes wait behind a full window", function()
        -- chat.push_queue_max 2 (the default): a sender may have 3 pushes to a peer queued or
        -- unanswered; the window (2 batches) holds q1 and q2, q3 waits in the queue
        local a, b, thread, ca, cb = linked_pair("warm")
        local lost = cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0)
        peer.stop()
        for i = 1, 3 do
            assert.equal(0, assert(ca:request(1017, text(a, b, thread, "q" .. i))).error)
        end
        -- q4 is stored and acked, then its handler waits for room: the next request waits too
        assert.equal(0, assert(ca:request(1017, text(a, b, thread, "q4"))).error)
        assert(ca:send(1023, { fromuid = a.uid }))
        assert.is_nil(ca:wait_push(1024, 300))
        peer.resume() -- before chat.push_timeout_ms
        assert.same({ error = 0 }, ca:wait_push(1024, 5000))
        for i = 1, 4 do
            assert.equal("q" .. i, assert(cb:wait_push(1019, 5000)).chat_datas[1].content)
        end
        settled(chat1)
        assert.equal(lost, cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0))
        assert.equal(0, cluster.metric(chat1, "chathost_chat_pushes_dropped_total", 0))
        ca:close()
        cb:close()
    end)

    it("gives up the pushes a stopped peer leaves unanswered and opens a new link", function()
        local a, b, thread, ca, cb = linked_pair("warm")
        local opened, failures = cluster.metric(chat1, OPENED, 0), cluster.metric(chat1, FAILURES, 0)
        local lost = cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0)
        peer.stop()
        local t0 = host.timer.monotonic()
        assert.equal(0, assert(ca:request(1017, text(a, b, thread, "lost"))).error)
        -- the sender is served meanwhile
        assert.same({ error = 0 }, ca:request(1023, { fromuid = a.uid }))
        assert(util.wait_until(function()
            return cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0) > lost
        end, 3 * PUSH_TIMEOUT_MS + 2000, "the push to be given up"))
        assert.truthy(host.timer.monotonic() - t0 >= PUSH_TIMEOUT_MS)
        assert.equal(failures + 1, cluster.metric(chat1, FAILURES, 0))
        assert.matches("push link to " .. chat2.name .. " down: no answer in " .. PUSH_TIMEOUT_MS,
            chat1:log())
        assert.matches("pushes to " .. chat2.name .. " given up: 1 %(push link", chat1:log())
        peer.resume()
        -- "lost" may still reach b (it was in chat2's socket); the next goes by a new link
        assert.equal(0, assert(ca:request(1017, text(a, b, thread, "after"))).error)
        local got
        repeat
            got = assert(cb:wait_push(1019, 5000)).chat_datas[1].content
        until got ~= "lost"
        assert.equal("after", got)
        assert(util.wait_until(function() return cluster.metric(chat1, OPENED, 0) == opened + 1 end,
            5000, "a new link"))
        ca:close()
        cb:close()
    end)

    it("sends NotifyBatch to a peer whose client port does not answer the link", function()
        local name = "nolink" .. host.crypto.random_hex(3)
        local got, close = announced(name, 1) -- port 1: refused
        local a, c, thread, ca = sender_to(chat1.port, name)
        assert.equal(0, assert(ca:request(1017, text(a, c, thread, "by call"))).error)
        assert(util.wait_until(function() return #got == 1 end, 5000, "the NotifyBatch call"))
        assert.same({ c.uid }, got)
        assert.matches("push link to " .. name .. " %([^)]*%) not opened", chat1:log())
        close()
        ca:close()
    end)

    it("holds no push while a peer from before the link leaves its opening unanswered", function()
        -- a chat port whose server takes no link message (ignored, as an older chathost
        -- does), announced with a gRPC peer that takes NotifyBatch
        local old = assert(host.chat.serve { address = "127.0.0.1:0", name = "old",
            handlers = function() return { messages = {} } end })
        local name = "old" .. host.crypto.random_hex(3)
        local got, close = announced(name, old.port)
        local a, c, thread, ca = sender_to(chat1.port, name)
        local refused = "push link to " .. name .. " %([^)]*%) not opened: timeout; pushes go by NotifyBatch for "
        for i = 1, 3 do
            assert.equal(0, assert(ca:request(1017, text(a, c, thread, "o" .. i))).error)
            assert(util.wait_until(function() return #got == i end, 5000, "push " .. i))
        end
        -- all three went by calls while the opening still waited for its answer
        assert.is_nil(chat1:log():match(refused))
        assert(util.wait_until(function() return chat1:log():match(refused .. "2000 ms") end,
            2 * PUSH_TIMEOUT_MS + 2000, "the opening to fail"))
        -- 2 s on, the next push dials again; that failure keeps the link off twice as long
        host.timer.sleep(2100)
        assert.equal(0, assert(ca:request(1017, text(a, c, thread, "o4"))).error)
        assert(util.wait_until(function() return chat1:log():match(refused .. "4000 ms") end,
            2 * PUSH_TIMEOUT_MS + 2000, "the second opening to fail"))
        assert.same({ c.uid, c.uid, c.uid, c.uid }, got)
        ca:close()
        close()
        old:close()
    end)

    it("takes a link down whose peer sends a frame that answers nothing", function()
        -- a peer that opens the link properly, then sends a 1019 on it before its answer
        local name = "odd" .. host.crypto.random_hex(3)
        local NONCE = string.rep("b", 32)
        local odd = assert(host.chat.serve { address = "127.0.0.1:0", name = "oddlink",
            handlers = function() return { messages = {
                [1201] = function() return { error = 0, name = name, nonce = NONCE } end,
                [1203] = function(_, body)
                    return { error = 0, max_body = 65535,
                        mac = answer_mac(body.nonce, NONCE, name, chat1.name) }
                end,
                [1205] = function(session)
                    session:send(1019, {})
                    return { error = 0, missed = {} }
                end,
            } } end })
        local got, close = announced(name, odd.port)
        local a, c, thread, ca = sender_to(chat1.port, name)
        local opened, failures = cluster.metric(chat1, OPENED, 0), cluster.metric(chat1, FAILURES, 0)
        local lost = cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0)
        -- the first push goes by a call while the link opens
        assert.equal(0, assert(ca:request(1017, text(a, c, thread, "y1"))).error)
        assert(util.wait_until(function() return cluster.metric(chat1, OPENED, 0) == opened + 1 end,
            5000, "the link to open"))
        assert.equal(0, assert(ca:request(1017, text(a, c, thread, "y2"))).error)
        assert(util.wait_until(function() return cluster.metric(chat1, FAILURES, 0) == failures + 1 end,
            5000, "the link to go down"))
        assert.matches("push link to " .. name .. " down: unexpected frame 1019; 1 batch%(es%) unanswered",
            chat1:log())
        -- y2's batch is handed back: c is still placed there, so it is given up and counted
        assert(util.wait_until(function()
            return cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0) == lost + 1
        end, 5000, "y2 to be given up"))
        assert.same({ c.uid }, got) -- y1, by the call
        ca:close()
        close()
        odd:close()
    end)

    it("sends no push over a link to a server that cannot prove grpc.secret", function()
        -- a chat port that answers the opening like a peer but with a wrong proof
        local name = "fake" .. host.crypto.random_hex(3)
        local fake = assert(host.chat.serve { address = "127.0.0.1:0", name = "fakelink",
            handlers = function() return { messages = {
                [1201] = function() return { error = 0, name = name, nonce = string.rep("a", 32) } end,
                [1203] = function() return { error = 0, max_body = 65535, mac = string.rep("0", 64) } end,
                [1205] = function() error("a push reached the impostor") end,
            } } end })
        local got, close = announced(name, fake.port)
        local a, c, thread, ca = sender_to(chat1.port, name)
        assert.equal(0, assert(ca:request(1017, text(a, c, thread, "x1"))).error)
        assert(util.wait_until(function()
            return chat1:log():match("push link to " .. name .. " %([^)]*%) not opened: wrong proof")
        end, 5000, "the opening to be refused"))
        assert.equal(0, assert(ca:request(1017, text(a, c, thread, "x2"))).error)
        assert(util.wait_until(function() return #got == 2 end, 5000, "both pushes by calls"))
        ca:close()
        close()
        fake:close()
    end)

    it("dials a new link after a reload, and delivers across it", function()
        local a, b, thread, ca, cb = linked_pair("before")
        local opened = cluster.metric(chat1, OPENED, 0)
        local generation = cluster.metric(chat1, "chathost_script_generation")
        assert(chat1.proc:kill("HUP"))
        assert(util.wait_until(function()
            return cluster.metric(chat1, "chathost_script_generation") > generation
        end, 5000, "chat1 to reload"))
        for i = 1, 3 do said(ca, cb, a, b, thread, "after" .. i) end
        assert(util.wait_until(function() return cluster.metric(chat1, OPENED, 0) == opened + 1 end,
            5000, "a new link"))
        local items = cluster.metric(chat1, ITEMS, 0)
        said(ca, cb, a, b, thread, "linked")
        assert.equal(items + 1, cluster.metric(chat1, ITEMS, 0))
        ca:close()
        cb:close()
    end)

    it("loses and reorders nothing when a reload retires a link with a batch unanswered", function()
        local a, b, thread, ca, cb = linked_pair("warm")
        local generation = cluster.metric(chat1, "chathost_script_generation")
        local batches = cluster.metric(chat1, BATCHES, 0)
        local lost = cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0)
        peer.stop()
        assert.equal(0, assert(ca:request(1017, text(a, b, thread, "p1"))).error)
        assert(util.wait_until(function() return cluster.metric(chat1, BATCHES, 0) == batches + 1 end,
            3000, "p1 on the link"))
        assert(chat1.proc:kill("HUP"))
        assert(util.wait_until(function()
            return cluster.metric(chat1, "chathost_script_generation") > generation
        end, 5000, "chat1 to reload"))
        assert.equal(0, assert(ca:request(1017, text(a, b, thread, "p2"))).error)
        peer.resume() -- before chat.push_timeout_ms: p1 is answered (p2 waited for it, link.get)
        assert.equal("p1", assert(cb:wait_push(1019, 5000)).chat_datas[1].content)
        assert.equal("p2", assert(cb:wait_push(1019, 5000)).chat_datas[1].content)
        settled(chat1)
        assert.equal(lost, cluster.metric(chat1, "chathost_chat_pushes_failed_total", 0))
        ca:close()
        cb:close()
    end)
end)

describe("chat push link while idle", function()
    local cl, chat1, chat2
    local HEARTBEAT_MS = 1200
    timeout(20000)

    setup(function()
        -- the peer closes a connection silent for HEARTBEAT_MS (users' too: they log in anew)
        cl = cluster.start { chat = { heartbeat_timeout_ms = HEARTBEAT_MS } }
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    teardown(function() cl:stop() end)

    it("keeps an idle link open with pings", function()
        local a, b, thread, ca, cb = pair(chat1.port, chat2.port)
        said(ca, cb, a, b, thread, "one")
        ca:close()
        cb:close()
        assert(util.wait_until(function() return cluster.metric(chat1, OPENED, 0) == 1 end, 5000,
            "the link to open"))
        local opened, failures = cluster.metric(chat1, OPENED, 0), cluster.metric(chat1, FAILURES, 0)
        host.timer.sleep(3 * HEARTBEAT_MS)
        ca, cb = cluster.login(chat1.port, a), cluster.login(chat2.port, b)
        said(ca, cb, a, b, thread, "two")
        assert.equal(opened, cluster.metric(chat1, OPENED, 0))
        assert.equal(failures, cluster.metric(chat1, FAILURES, 0))
        ca:close()
        cb:close()
    end)
end)

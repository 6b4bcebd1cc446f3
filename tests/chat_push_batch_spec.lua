-- Pushes for users on another chat server travel together (chat.push): one
-- ChatService.NotifyBatch call carries what the sender's server has queued for that peer,
-- at most chat.push_batch_max pushes, each sender's in order; a push the peer answers 1011
-- for follows its user once; a peer that only speaks NotifyTextChatMsg gets each push by
-- it, and a chat server still takes NotifyTextChatMsg from such a peer; after a reload the
-- new generation's pushes queue behind the call the old one has in flight; a receiver's
-- server (uip_) is read once per chat.location_cache_ms, and a push after the receiver
-- moved follows it from the server the cache still names. Fake peers are gRPC servers in
-- this process, announced in Redis as chat servers.
local host = require "host"
local util = require "helpers.util"
local cluster = require "helpers.chat_cluster"
local redis = host.redis

local BATCH = { method = "ChatService.NotifyBatch" }
local CALLS = "chathost_grpc_client_calls_total"
local READS = "chathost_chat_push_location_reads_total"

local text, pair, said = cluster.text, cluster.pair, cluster.said
local fake_peer = cluster.fake_peer

describe("chat pushes to a peer server", function()
    local cl, chat1, chat2, chat3, chat4
    local SHORT_CACHE_MS = 300

    setup(function()
        -- a window far above a request's round trip: what the senders' pushes share; a
        -- location cache far longer than any test
        -- (push_link = false: these are NotifyBatch's specs; chat_push_link_spec has the link's)
        cl = cluster.start { chat = { push_batch_window_ms = 20, location_cache_ms = 60000,
            push_link = false } }
        chat1, chat2 = cl.chats[1], cl.chats[2]
        chat3 = cluster.start_chat { chat = { push_batch_window_ms = 20, push_batch_max = 1,
            location_cache_ms = 0, push_link = false } }
        cl.chats[3] = chat3
        chat4 = cluster.start_chat { chat = { location_cache_ms = SHORT_CACHE_MS, push_link = false } }
        cl.chats[4] = chat4
    end)

    teardown(function() cl:stop() end)

    -- n pairs, a_i logged in on from, b_i on to: -> senders, receivers, users, threads
    local function pairs_across(n, from, to)
        local ca, cb, a, b, th = {}, {}, {}, {}, {}
        for i = 1, n do
            a[i], b[i] = cluster.user(), cluster.user()
            th[i] = cluster.befriend(a[i], b[i])
            ca[i] = cluster.login(from.port, a[i])
            cb[i] = cluster.login(to.port, b[i])
        end
        return ca, cb, a, b, th
    end

    -- Every push of role has ended (its answer is in, so is the call's count).
    local function settled(role) cluster.settled(role, 5000) end

    -- Every a_i sends k texts without waiting for the acks; each b_i gets them in order.
    local function exchange(from, to, n, k)
        local ca, cb, a, b, th = pairs_across(n, from, to)
        for j = 1, k do
            for i = 1, n do
                assert(ca[i]:send(1017, text(a[i], b[i], th[i], ("m%d-%d"):format(i, j))))
            end
        end
        for i = 1, n do
            for j = 1, k do
                assert.equal(0, assert(ca[i]:wait_push(1018)).error)
                local push = assert(cb[i]:wait_push(1019, 5000), "push " .. j .. " to b" .. i)
                assert.equal(("m%d-%d"):format(i, j), push.chat_datas[1].content)
            end
        end
        for i = 1, n do
            ca[i]:close()
            cb[i]:close()
        end
        settled(from)
    end

    it("carries the pushes of many senders in fewer calls, each sender's in order", function()
        local calls = cluster.metric(chat1, CALLS, 0, BATCH)
        local items = cluster.metric(chat1, "chathost_chat_push_batch_items_total", 0)
        local n, k = 12, 4
        exchange(chat1, chat2, n, k)
        local made = cluster.metric(chat1, CALLS, 0, BATCH) - calls
        assert.truthy(made >= 1 and made < n * k, made .. " calls for " .. n * k .. " pushes")
        assert.equal(n * k, cluster.metric(chat1, "chathost_chat_push_batch_items_total") - items)
        assert.equal(0,
            cluster.metric(chat1, CALLS, 0, { method = "ChatService.NotifyTextChatMsg" }))
    end)

    it("makes one call per push at chat.push_batch_max = 1", function()
        local calls = cluster.metric(chat3, CALLS, 0, BATCH)
        local n, k = 4, 3
        exchange(chat3, chat2, n, k)
        assert.equal(n * k, cluster.metric(chat3, CALLS, 0, BATCH) - calls)
        assert.equal(cluster.metric(chat3, "chathost_chat_push_batches_total"),
            cluster.metric(chat3, "chathost_chat_push_batch_items_total"))
    end)

    it("follows a user the peer answers 1011 for, once", function()
        -- fake_a: b is not here, b is on chat2 now; c is not here, c is on fake_b now.
        -- fake_b: c is not here, c is on fake_a now (a chase without end, but for the once)
        local got = { a = {}, b = {} }
        local a, b, c = cluster.user(), cluster.user(), cluster.user()
        local moves = { a = { [b.uid] = chat2.name, [c.uid] = "fakeb" .. c.uid },
            b = { [c.uid] = "fakea" .. c.uid } }
        local function peer(which)
            return { ["ChatService.NotifyBatch"] = function(req)
                local errors = {}
                for i, it in ipairs(req.items) do
                    got[which][#got[which] + 1] = it.touid
                    assert(redis.call("SET", "uip_" .. it.touid, moves[which][it.touid], "EX", 600))
                    errors[i] = 1011
                end
                return { error = 0, errors = errors }
            end }
        end
        local sa, sb = peer("a"), peer("b")
        local fakes = { fake_peer("fakea" .. b.uid, sa), fake_peer("fakea" .. c.uid, sa),
            fake_peer("fakeb" .. c.uid, sb) }
        local ab, ac = cluster.befriend(a, b), cluster.befriend(a, c)
        local ca = cluster.login(chat1.port, a)
        local cb = cluster.login(chat2.port, b)
        assert(redis.call("SET", "uip_" .. b.uid, "fakea" .. b.uid, "EX", 600))
        assert(redis.call("SET", "uip_" .. c.uid, "fakea" .. c.uid, "EX", 600))
        assert.equal(0, assert(ca:request(1017, text(a, b, ab, "moved"))).error)
        assert.equal("moved", assert(cb:wait_push(1019, 5000)).chat_datas[1].content)
        assert.same({ b.uid }, got.a)
        assert.equal(0, assert(ca:request(1017, text(a, c, ac, "chased"))).error)
        assert(util.wait_until(function() return #got.b == 1 end, 5000, "the push to follow c"))
        settled(chat1) -- followed once: it ends at fake_b, which sends it back to fake_a no more
        assert.same({ b.uid, c.uid }, got.a)
        assert.same({ c.uid }, got.b)
        for _, f in ipairs(fakes) do f:close() end
        ca:close()
        cb:close()
    end)

    -- a on from sends k texts to b on to, each awaited: -> the uip_ reads of from meanwhile
    local function reads_for(from, to, k)
        local a, b, thread, ca, cb = pair(from.port, to.port)
        local before = cluster.metric(from, READS, 0)
        for j = 1, k do said(ca, cb, a, b, thread, "r" .. j) end
        local reads = cluster.metric(from, READS, 0) - before
        ca:close()
        cb:close()
        settled(from)
        return reads
    end

    it("reads a receiver's server once within chat.location_cache_ms", function()
        assert.equal(1, reads_for(chat1, chat2, 4))
    end)

    it("reads a receiver's server for every push at chat.location_cache_ms = 0", function()
        assert.equal(4, reads_for(chat3, chat2, 4))
    end)

    it("reads a receiver's server again once chat.location_cache_ms has passed", function()
        local a, b, thread, ca, cb = pair(chat4.port, chat2.port)
        local before = cluster.metric(chat4, READS, 0)
        local function send(content)
            said(ca, cb, a, b, thread, content)
            return host.timer.monotonic()
        end
        local first = send("read")
        send("cached")
        -- the second was within the cache's time unless the machine stalled: then it read
        local cached = host.timer.monotonic() - first < SHORT_CACHE_MS
        assert.equal(cached and 1 or 2, cluster.metric(chat4, READS, 0) - before)
        local reads = cluster.metric(chat4, READS, 0)
        host.timer.sleep(SHORT_CACHE_MS + 50)
        send("expired")
        assert.equal(reads + 1, cluster.metric(chat4, READS, 0))
        ca:close()
        cb:close()
        settled(chat4)
    end)

    it("follows a receiver who moved from the server the location cache names", function()
        local a, b, thread, ca, old = pair(chat1.port, chat2.port)
        said(ca, old, a, b, thread, "there")
        -- b moves to chat3 (chat2's session is kicked); chat1's cache still says chat2
        local new = cluster.login(chat3.port, b)
        assert.same({ error = 0, uid = b.uid }, old:wait_push(1021))
        assert.equal(chat3.name, redis.call("GET", "uip_" .. b.uid))
        local SERVED = "chathost_grpc_server_calls_total"
        local served = cluster.metric(chat2, SERVED, 0, BATCH)
        local reads = cluster.metric(chat1, READS, 0)
        said(ca, new, a, b, thread, "moved")
        -- it went to chat2 first (answered 1011 there), then after b (one read of uip_)
        assert.equal(served + 1, cluster.metric(chat2, SERVED, 0, BATCH))
        assert.equal(reads + 1, cluster.metric(chat1, READS, 0))
        -- the entry that sent it astray is gone: the next push reads uip_ and goes straight
        said(ca, new, a, b, thread, "again")
        assert.equal(served + 1, cluster.metric(chat2, SERVED, 0, BATCH))
        assert.equal(reads + 2, cluster.metric(chat1, READS, 0))
        ca:close()
        old:close()
        new:close()
        settled(chat1)
    end)

    it("sends each push by NotifyTextChatMsg to a peer without NotifyBatch", function()
        local got = {}
        local a, d = cluster.user(), cluster.user()
        local fake = fake_peer("fakeold" .. d.uid, {
            ["ChatService.NotifyTextChatMsg"] = function(req)
                got[#got + 1] = req.textmsgs[1].msgcontent
                return { error = 0, fromuid = req.fromuid, touid = req.touid,
                    thread_id = req.thread_id }
            end })
        local thread = cluster.befriend(a, d)
        local ca = cluster.login(chat1.port, a)
        assert(redis.call("SET", "uip_" .. d.uid, "fakeold" .. d.uid, "EX", 600))
        local unimplemented = cluster.metric(chat1, CALLS, 0,
            { method = "ChatService.NotifyBatch", code = "UNIMPLEMENTED" })
        for i = 1, 3 do
            assert.equal(0, assert(ca:request(1017, text(a, d, thread, "old" .. i))).error)
        end
        assert(util.wait_until(function() return #got == 3 end, 5000, "three old-style pushes"))
        assert.same({ "old1", "old2", "old3" }, got)
        assert.truthy(cluster.metric(chat1, CALLS, 0,
            { method = "ChatService.NotifyBatch", code = "UNIMPLEMENTED" }) > unimplemented)
        fake:close()
        ca:close()
    end)

    it("delivers a NotifyTextChatMsg from a peer that speaks only that", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local cb = cluster.login(chat2.port, b)
        local rsp = assert(host.grpc.call("127.0.0.1:" .. chat2.rpc_port,
            "ChatService.NotifyTextChatMsg", { fromuid = a.uid, touid = b.uid, thread_id = thread,
                textmsgs = { { unique_id = "{old}", msg_id = 7, msgcontent = "from an old peer",
                    chat_time = "2026-12-07 04:00:00" } } }))
        assert.equal(0, rsp.error)
        local push = assert(cb:wait_push(1019, 5000))
        assert.equal("from an old peer", push.chat_datas[1].content)
        assert.equal(a.uid, push.fromuid)
        cb:close()
    end)

    it("answers each NotifyBatch item: sent, not here, not a push", function()
        local b, gone = cluster.user(), cluster.user()
        local cb = cluster.login(chat2.port, b)
        local body = host.json.encode { error = 0, fromuid = 1, touid = b.uid, thread_id = 1,
            chat_datas = { { content = "batched" } } }
        local rsp = assert(host.grpc.call("127.0.0.1:" .. chat2.rpc_port, "ChatService.NotifyBatch",
            { items = { { touid = b.uid, msg_id = 1021, body = "{}" },
                { touid = gone.uid, msg_id = 1019, body = body },
                { touid = b.uid, msg_id = 1019, body = body } } }))
        assert.equal(0, rsp.error)
        assert.same({ 1016, 1011, 0 }, rsp.errors)
        assert.equal("batched", assert(cb:wait_push(1019, 5000)).chat_datas[1].content)
        assert.is_true(cb:no_push(1021, 200))
        cb:close()
    end)
end)

describe("chat pushes to a peer server across a reload", function()
    local cl, chat1, chat2
    local peer -- chat2's stopper (helpers.chat_cluster)
    timeout(20000)

    setup(function()
        -- no window: a push to an idle peer leaves at once, alone; a deadline far longer
        -- than the test, so the call to the stopped server waits for it
        cl = cluster.start { chat = { push_batch_window_ms = 0, push_timeout_ms = 15000,
            alive_ttl_s = 60, push_link = false }, config = { grpc = { deadline_ms = 60000 } } }
        chat1, chat2 = cl.chats[1], cl.chats[2]
        peer = cluster.stopper(chat2)
    end)

    teardown(function()
        if peer then peer.resume() end
        cl:stop()
    end)

    it("queues the new generation's pushes behind the call the old one has in flight", function()
        local a, b, thread, ca, cb = pair(chat1.port, chat2.port)
        said(ca, cb, a, b, thread, "warm")
        local function queued()
            return cluster.metric(chat1, "chathost_chat_pushes_queued_total", 0)
        end
        local function done()
            return cluster.metric(chat1, "chathost_chat_pushes_queue_done_total", 0)
        end
        assert(util.wait_until(function() return done() == queued() end, 5000, "warm to end"))
        local calls = cluster.metric(chat1, CALLS, 0, BATCH)
        local before = queued()
        peer.stop()
        assert.equal(0, assert(ca:request(1017, text(a, b, thread, "r1"))).error)
        assert(util.wait_until(function() return queued() == before + 1 end, 5000, "r1 queued"))
        local generation = cluster.metric(chat1, "chathost_script_generation")
        assert(chat1.proc:kill("HUP"))
        assert(util.wait_until(function()
            return cluster.metric(chat1, "chathost_script_generation") > generation
        end, 5000, "chat1 to reload"))
        for i = 2, 3 do
            assert.equal(0, assert(ca:request(1017, text(a, b, thread, "r" .. i))).error)
        end
        assert(util.wait_until(function() return queued() == before + 3 end, 5000, "r2, r3 queued"))
        peer.resume()
        for i = 1, 3 do
            assert.equal("r" .. i, assert(cb:wait_push(1019, 5000)).chat_datas[1].content)
        end
        assert(util.wait_until(function() return done() == queued() end, 5000, "the pushes to end"))
        -- r1 alone, then r2 and r3 together once r1's call came back: one call in flight
        assert.equal(2, cluster.metric(chat1, CALLS, 0, BATCH) - calls)
        ca:close()
        cb:close()
    end)
end)

-- The chat role's text messages and history (docs/protocol.md §6): stored before the
-- 1018 that reports their ids, pushed as 1019 to a peer on the same or the other server,
-- only between friends in their own thread, limits in bytes and items, group commit under
-- concurrency, exact paging of threads and messages, offline peers reading at next login.
local host = require "host"
local util = require "helpers.util"
local cluster = require "helpers.chat_cluster"
local db = host.db

local function items(prefix, n, size)
    local out = {}
    for i = 1, n do
        local content = ("%s %d"):format(prefix, i)
        if size then content = content .. ("."):rep(size - #content) end
        out[i] = { content = content, unique_id = ("{%s-%d}"):format(prefix, i) }
    end
    return out
end

local function stored(id)
    return assert(db.query("SELECT thread_id, sender_id, recv_id, content, status FROM chat_message"
        .. " WHERE message_id = ?", id))[1]
end

describe("chat text", function()
    local cl, chat1, chat2

    setup(function()
        cl = cluster.start()
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    teardown(function() cl:stop() end)

    it("stores, acknowledges and pushes messages both ways across servers", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        local cb = cluster.login(chat2.port, b)
        local function exchange(from, to, cfrom, cto, text)
            local ack = assert(cfrom:request(1017, { fromuid = from.uid, touid = to.uid,
                thread_id = thread, text_array = text }))
            assert.same({ 0, from.uid, to.uid, thread },
                { ack.error, ack.fromuid, ack.touid, ack.thread_id })
            assert.equal(#text, #ack.chat_datas)
            for i, d in ipairs(ack.chat_datas) do
                assert.equal(text[i].unique_id, d.unique_id)
                assert.equal(text[i].content, d.content)
                assert.equal(2, d.status)
                assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$", d.chat_time)
                assert.same({ thread_id = thread, sender_id = from.uid, recv_id = to.uid,
                    content = text[i].content, status = 2 }, stored(d.message_id))
            end
            assert.same(ack, cto:wait_push(1019))
            return ack
        end
        local first = exchange(a, b, ca, cb, items("hello 😀", 3))
        local second = exchange(b, a, cb, ca, items("back", 2))
        assert.truthy(second.chat_datas[1].message_id > first.chat_datas[3].message_id)
        ca:close()
        cb:close()
    end)

    it("pushes to a peer on the same server", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        local cb = cluster.login(chat1.port, b)
        local ack = assert(ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = items("near", 1) }))
        assert.equal(0, ack.error)
        assert.same(ack, cb:wait_push(1019))
        ca:close()
        cb:close()
    end)

    it("refuses strangers, other threads, other senders and bad items", function()
        local a, b, c = cluster.user(), cluster.user(), cluster.user()
        local ab = cluster.befriend(a, b)
        local bc = cluster.befriend(b, c)
        local ca = cluster.login(chat1.port, a)
        local cc = cluster.login(chat2.port, c)
        local function text(fields)
            local req = { fromuid = a.uid, touid = b.uid, thread_id = ab,
                text_array = items("x", 1) }
            for k, v in pairs(fields) do req[k] = v end
            return ca:request(1017, req)
        end
        assert.same({ error = 1015, field = "thread_id" }, text { touid = c.uid })
        assert.same({ error = 1015, field = "thread_id" }, text { touid = c.uid, thread_id = bc })
        assert.same({ error = 1015, field = "thread_id" }, text { thread_id = bc })
        assert.same({ error = 1015, field = "fromuid" }, text { fromuid = b.uid })
        assert.same({ error = 1016, field = "touid" }, text { touid = a.uid })
        assert.same({ error = 1016, field = "thread_id" }, text { thread_id = 0 })
        assert.same({ error = 1016, field = "text_array" }, text { text_array = {} })
        assert.same({ error = 1016, field = "text_array" }, text { text_array = items("x", 33) })
        assert.same({ error = 1016, field = "content" }, text { text_array = items("x", 1, 4097) })
        local function one(item) return text { text_array = { item } } end
        assert.same({ error = 1016, field = "content" }, one { content = "", unique_id = "u" })
        assert.same({ error = 1016, field = "content" }, one { unique_id = "u" })
        assert.same({ error = 1001, field = "content" }, one { content = 5, unique_id = "u" })
        assert.same({ error = 1001, field = "unique_id" }, one { content = "x", unique_id = 5 })
        assert.same({ error = 1001, field = "text_array" }, text { text_array = "hello" })
        assert.same({ error = 1001, field = "thread_id" }, text { thread_id = "1" })
        -- at the limits: 4096 bytes (multi-byte characters count in bytes), 32 items
        local cjk = ("汉"):rep(1365) -- 4095 bytes
        assert.equal(0, text { text_array = { { content = cjk .. "x", unique_id = "max" } } }.error)
        assert.same({ error = 1016, field = "content" },
            text { text_array = { { content = cjk .. "汉", unique_id = "over" } } })
        local ok = text { text_array = items("y", 32) }
        assert.equal(32, #ok.chat_datas)
        -- c, who is no member, cannot read the thread either
        assert.same({ error = 1015, field = "thread_id" },
            cc:request(1029, { thread_id = ab, message_id = 0 }))
        ca:close()
        cc:close()
    end)

    it("commits messages of many sessions together and acknowledges each with its own ids",
    function()
        local hub = cluster.user()
        local senders, clients, threads = {}, {}, {}
        for i = 1, 12 do
            senders[i] = cluster.user()
            threads[i] = cluster.befriend(senders[i], hub)
            clients[i] = cluster.login(i % 2 == 0 and chat1.port or chat2.port, senders[i])
        end
        -- before: a server that has stored nothing yet lists no series; after: both must
        local function totals(absent)
            local b, m = 0, 0
            for _, chat in ipairs({ chat1, chat2 }) do
                b = b + cluster.metric(chat, "chathost_chat_batches_total", absent)
                m = m + cluster.metric(chat, "chathost_chat_messages_stored_total", absent)
            end
            return b, m
        end
        local batches0, stored0 = totals(0)
        local tasks = {}
        for i = 1, 12 do
            tasks[i] = host.spawn(function()
                local acks = {}
                for k = 1, 5 do
                    acks[k] = clients[i]:request(1017, { fromuid = senders[i].uid, touid = hub.uid,
                        thread_id = threads[i], text_array = items(("s%d r%d"):format(i, k), 3) })
                end
                return acks
            end)
        end
        local seen = {}
        for i = 1, 12 do
            local _, acks = tasks[i]:wait()
            for k, ack in ipairs(acks) do
                assert.equal(0, ack.error)
                for j, d in ipairs(ack.chat_datas) do
                    assert.is_nil(seen[d.message_id])
                    seen[d.message_id] = true
                    assert.equal(("s%d r%d %d"):format(i, k, j), stored(d.message_id).content)
                end
            end
        end
        for i = 1, 12 do clients[i]:close() end
        -- 60 requests of 3 messages: far fewer INSERTs than requests
        local batches, messages = totals()
        assert.equal(180, messages - stored0)
        assert.truthy(batches - batches0 <= 40, "batches: " .. (batches - batches0))
    end)

    it("pages 120 messages by 50 with an exact load_more", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        local sent = {}
        for _, n in ipairs({ 32, 32, 32, 24 }) do
            local ack = ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
                text_array = items("m" .. #sent, n) })
            for _, d in ipairs(ack.chat_datas) do sent[#sent + 1] = d end
        end
        assert.equal(120, #sent)
        local cursor, got = 0, {}
        for _, expect in ipairs({ { 50, true }, { 50, true }, { 20, false }, { 0, false } }) do
            local r = assert(ca:request(1029, { thread_id = thread, message_id = cursor }))
            assert.equal(0, r.error)
            assert.equal(thread, r.thread_id)
            assert.equal(expect[1], #r.chat_datas)
            assert.equal(expect[2], r.load_more)
            for _, d in ipairs(r.chat_datas) do got[#got + 1] = d end
            local last = r.chat_datas[#r.chat_datas]
            assert.equal(last and last.msg_id or cursor, r.last_message_id)
            cursor = r.last_message_id
        end
        assert.equal(120, #got)
        for i, d in ipairs(got) do
            assert.same({ sent[i].message_id, sent[i].content, a.uid, b.uid, thread, 0, 2, 0 },
                { d.msg_id, d.msg_content, d.sender, d.receiver, d.thread_id, d.unique_id, d.status,
                  d.msg_type })
            assert.equal(sent[i].chat_time, d.chat_time)
        end
        ca:close()
    end)

    it("cuts a page of long messages to fit one frame and goes on from there", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        for k = 1, 30 do
            assert.equal(0, ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
                text_array = items("long" .. k, 1, 4000) }).error)
        end
        assert(ca:send(1029, { thread_id = thread, message_id = 0 }))
        -- the precondition: the 30 messages (one page of 50, uncut) would not fit in a frame
        local bytes = assert(db.query("SELECT SUM(LENGTH(content)) AS n FROM chat_message"
            .. " WHERE thread_id = ?", thread))[1].n
        assert.truthy(tonumber(bytes) > 65535, bytes)
        local id, raw = ca.conn:read_frame(5000) -- a frame body is at most 65535 bytes
        assert.equal(1030, id)
        local r = host.json.decode(raw)
        assert.is_true(r.load_more)
        assert.truthy(#r.chat_datas >= 10 and #r.chat_datas < 30, #r.chat_datas)
        local rest = assert(ca:request(1029,
            { thread_id = thread, message_id = r.last_message_id }))
        assert.equal(30, #r.chat_datas + #rest.chat_datas)
        assert.is_false(rest.load_more)
        ca:close()
    end)

    it("pages threads by 50 with an exact load_more, only the user's own", function()
        local me = cluster.user()
        local mine = {}
        for i = 1, 60 do mine[i] = cluster.befriend(me, cluster.user()) end
        cluster.befriend(cluster.user(), cluster.user()) -- someone else's
        local c = cluster.login(chat2.port, me)
        local r1 = assert(c:request(1025, { uid = me.uid, thread_id = 0 }))
        assert.same({ 0, me.uid, 50, true, mine[50] },
            { r1.error, r1.uid, #r1.threads, r1.load_more, r1.next_last_id })
        local t = r1.threads[1]
        assert.equal("private", t.type)
        assert.equal(mine[1], t.thread_id)
        assert.truthy(t.user1_id < t.user2_id and (t.user1_id == me.uid or t.user2_id == me.uid))
        local r2 = assert(c:request(1025, { uid = me.uid, thread_id = r1.next_last_id }))
        assert.same({ 10, false, mine[60] }, { #r2.threads, r2.load_more, r2.next_last_id })
        local r3 = assert(c:request(1025, { uid = me.uid, thread_id = r2.next_last_id }))
        assert.same({ 0, false, mine[60] }, { #r3.threads, r3.load_more, r3.next_last_id })
        assert.same({ error = 1015, field = "uid" },
            c:request(1025, { uid = me.uid + 1, thread_id = 0 }))
        c:close()
    end)

    it("acknowledges at once when the peer's server died, and the peer reads it later", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local doomed = cluster.start_chat()
        local ca = cluster.login(chat1.port, a)
        local cb = cluster.login(doomed.port, b)
        doomed.proc:kill("KILL")
        doomed.proc:wait()
        cb:close()
        assert(util.wait_until(function()
            return host.redis.call("EXISTS", "chatserver_" .. doomed.name) == 0
        end, 5000, "the dead server's liveness to expire"))
        assert.equal(doomed.name, host.redis.call("GET", "uip_" .. b.uid)) -- stale presence
        local t0 = host.timer.monotonic()
        local ack = ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = items("into the void", 1) })
        assert.equal(0, ack.error)
        assert.truthy(host.timer.monotonic() - t0 < 500)
        local again = cluster.login(chat2.port, b)
        local page = assert(again:request(1029, { thread_id = thread, message_id = 0 }))
        assert.equal(ack.chat_datas[1].message_id, page.chat_datas[1].msg_id)
        again:close()
        ca:close()
        doomed:stop()
    end)

    it("lets an offline peer read the messages at its next login", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        local ack = ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = items("while you were away", 2) })
        assert.equal(0, ack.error)
        ca:close()
        local cb = cluster.login(chat2.port, b)
        local threads = assert(cb:request(1025, { uid = b.uid, thread_id = 0 }))
        assert.equal(thread, threads.threads[1].thread_id)
        local page = assert(cb:request(1029, { thread_id = thread, message_id = 0 }))
        assert.same({ ack.chat_datas[1].message_id, ack.chat_datas[2].message_id },
            { page.chat_datas[1].msg_id, page.chat_datas[2].msg_id })
        assert.equal("while you were away 2", page.chat_datas[2].msg_content)
        cb:close()
    end)
end)

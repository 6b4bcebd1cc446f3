-- A text message (1017) resent after an unknown outcome (its server died with it in
-- flight) is stored once: an item whose (fromuid, unique_id) names a message stored within
-- chat.dedupe_window_s is answered with that message's id and pushed again. The unique key
-- (sender_id, unique_id) of chat_message (sql/003) finds the resend inside the group commit
-- without failing the other rows of the batch.
local host = require "host"
local cluster = require "helpers.chat_cluster"
local db = host.db

local WINDOW_S = 3600

local function rows_with(sender, unique_id)
    return cluster.count("SELECT COUNT(*) AS n FROM chat_message WHERE sender_id = ? AND unique_id = ?",
        sender, unique_id)
end

local function send(c, from, to, thread, text)
    return assert(c:request(1017, { fromuid = from.uid, touid = to.uid, thread_id = thread,
        text_array = text }))
end

-- Moves a stored message's created_at back by seconds (as if it were sent that long ago).
local function age(message_id, seconds)
    assert(db.exec("UPDATE chat_message SET created_at = created_at - INTERVAL ? SECOND"
        .. " WHERE message_id = ?", seconds, message_id))
end

describe("chat text resent", function()
    local cl, chat

    setup(function()
        cl = cluster.start { chats = 1, chat = { dedupe_window_s = WINDOW_S } }
        chat = cl.chats[1]
    end)

    teardown(function() cl:stop() end)

    it("answers a resend with the first message_id, stores one row and pushes it again", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca, cb = cluster.login(chat.port, a), cluster.login(chat.port, b)
        local uid = "{resend-" .. host.crypto.random_hex(4) .. "}"
        local first = send(ca, a, b, thread, { { content = "once", unique_id = uid } })
        assert.equal(0, first.error)
        assert.same(first, cb:wait_push(1019))
        local again = send(ca, a, b, thread, { { content = "once", unique_id = uid } })
        assert.same(first, again)
        assert.same(first, cb:wait_push(1019)) -- the peer may have missed the first push
        assert.equal(1, rows_with(a.uid, uid))
        -- a resend together with a new item: the new one is stored, in the order sent
        local mixed = send(ca, a, b, thread, { { content = "once", unique_id = uid },
            { content = "new", unique_id = uid .. "2" } })
        assert.equal(first.chat_datas[1].message_id, mixed.chat_datas[1].message_id)
        assert.truthy(mixed.chat_datas[2].message_id > first.chat_datas[1].message_id)
        assert.equal("new", mixed.chat_datas[2].content)
        assert.same({ 1, 1 }, { rows_with(a.uid, uid), rows_with(a.uid, uid .. "2") })
        -- the same unique_id from another sender is another message
        local back = send(cb, b, a, thread, { { content = "mine", unique_id = uid } })
        assert.equal(0, back.error)
        assert.is_true(first.chat_datas[1].message_id ~= back.chat_datas[1].message_id)
        assert.same({ 1, 1 }, { rows_with(a.uid, uid), rows_with(b.uid, uid) })
        -- no unique_id: never a resend
        local n = cluster.count("SELECT COUNT(*) AS n FROM chat_message WHERE thread_id = ?", thread)
        send(ca, a, b, thread, { { content = "anon" } })
        send(ca, a, b, thread, { { content = "anon", unique_id = "" } })
        assert.equal(n + 2, cluster.count("SELECT COUNT(*) AS n FROM chat_message WHERE thread_id = ?",
            thread))
        ca:close()
        cb:close()
    end)

    it("refuses a unique_id used twice in one message", function()
        local a, b = cluster.user(), cluster.user()
        local ab = cluster.befriend(a, b)
        local ca = cluster.login(chat.port, a)
        local uid = "{twice-" .. host.crypto.random_hex(4) .. "}"
        assert.same({ error = 1016, field = "unique_id" }, send(ca, a, b, ab,
            { { content = "x", unique_id = uid }, { content = "y", unique_id = uid } }))
        assert.equal(0, rows_with(a.uid, uid))
        ca:close()
    end)

    it("stores a unique_id of another thread's message as a new message there", function()
        local a, b, c = cluster.user(), cluster.user(), cluster.user()
        local ab, ac = cluster.befriend(a, b), cluster.befriend(a, c)
        local ca = cluster.login(chat.port, a)
        local uid = "{other-" .. host.crypto.random_hex(4) .. "}"
        local first = send(ca, a, b, ab, { { content = "to b", unique_id = uid } })
        local other = send(ca, a, c, ac, { { content = "to c", unique_id = uid } })
        assert.same({ 0, uid, "to c" },
            { other.error, other.chat_datas[1].unique_id, other.chat_datas[1].content })
        local id = other.chat_datas[1].message_id
        assert.is_true(id ~= first.chat_datas[1].message_id)
        assert.same({ thread_id = ac, content = "to c" }, assert(db.query(
            "SELECT thread_id, content FROM chat_message WHERE message_id = ?", id))[1])
        -- the unique_id still answers for the first message
        assert.equal(1, rows_with(a.uid, uid))
        assert.same(first, send(ca, a, b, ab, { { content = "to b", unique_id = uid } }))
        ca:close()
    end)

    it("treats a resend within dedupe_window_s as one and after it as a new message", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat.port, a)
        local uid = "{window-" .. host.crypto.random_hex(4) .. "}"
        local first = send(ca, a, b, thread, { { content = "old", unique_id = uid } })
        local id = first.chat_datas[1].message_id
        age(id, WINDOW_S - 10) -- inside the window (with 10 s to spare for the test itself)
        local within = send(ca, a, b, thread, { { content = "old", unique_id = uid } })
        assert.equal(id, within.chat_datas[1].message_id)
        assert.equal(1, rows_with(a.uid, uid))
        age(id, 11) -- now WINDOW_S + 1 seconds old
        local after = send(ca, a, b, thread, { { content = "old", unique_id = uid } })
        assert.equal(0, after.error)
        assert.truthy(after.chat_datas[1].message_id > id)
        -- the unique_id moved to the new message; the old one is kept, without it
        assert.equal(after.chat_datas[1].message_id, assert(db.query(
            "SELECT message_id FROM chat_message WHERE sender_id = ? AND unique_id = ?", a.uid, uid))[1].message_id)
        assert.equal(1, cluster.count("SELECT COUNT(*) AS n FROM chat_message WHERE message_id = ?"
            .. " AND unique_id IS NULL", id))
        ca:close()
    end)
end)

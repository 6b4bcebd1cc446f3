-- 1035 image -> 1036 on two chat servers: the image message is stored (msg_type 1, status 3
-- "uploading", content = its name) before the ack that carries its message_id, nobody else
-- hears of it until the resource role's notify_ready, which reaches the receiver on the
-- other server as 1039 with the fields and types of the Season 2 client; only friends in
-- their own thread, only plain names, a resend of the same unique_id stored once; 1030
-- shows image messages with their status; 1049 signs a download URL for participants of a
-- complete image only.
local host = require "host"
local cluster = require "helpers.chat_cluster"
local chat_client = require "helpers.chat_client"
local db = host.db

local images = require "helpers.scripts_lib" "lib.images"
local signed_url = require "helpers.scripts_lib" "lib.signed_url"

local MD5 = "0123456789abcdef0123456789ABCDEF"

local function announce(c, from, to, thread, name, unique_id, extra)
    local body = { fromuid = from.uid, touid = to.uid, thread_id = thread, md5 = MD5, name = name,
        token = from.token, unique_id = unique_id, text_or_url = "/home/someone/Pictures/x.png" }
    for k, v in pairs(extra or {}) do body[k] = v end
    return assert(c:request(1035, body))
end

local function uuid() return "{" .. host.crypto.random_hex(16) .. "}" end

local function name() return host.crypto.random_hex(8) .. "-c0de.png" end

describe("chat image message", function()
    local cl, chat1, chat2

    setup(function()
        cl = cluster.start {}
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    teardown(function() cl:stop() end)

    it("is stored as uploading, acked with its message_id, and announced by notify_ready", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca, cb = cluster.login(chat1.port, a), cluster.login(chat2.port, b)
        local img, uid = name(), uuid()
        local ack = announce(ca, a, b, thread, img, uid)
        assert.equal("number", type(ack.message_id))
        assert.equal("string", type(ack.chat_time))
        assert.same({ error = 0, fromuid = a.uid, touid = b.uid, thread_id = thread, md5 = MD5,
            unique_name = img, unique_id = uid, chat_time = ack.chat_time, status = 3,
            message_id = ack.message_id }, ack)
        local row = assert(db.query("SELECT thread_id, sender_id, recv_id, content, status, msg_type"
            .. " FROM chat_message WHERE message_id = ?", ack.message_id))[1]
        assert.same({ thread_id = thread, sender_id = a.uid, recv_id = b.uid, content = img,
            status = 3, msg_type = 1 }, row)
        assert.is_true(cb:no_push(1039, 200)) -- not before the file is complete
        assert.is_true(cb:no_push(1019, 0))

        -- the history shows it, uploading
        local page = assert(cb:request(1029, { thread_id = thread }))
        local last = page.chat_datas[#page.chat_datas]
        assert.same({ ack.message_id, img, 1, 3, a.uid, b.uid },
            { last.msg_id, last.msg_content, last.msg_type, last.status, last.sender, last.receiver })

        -- what the resource role does once the upload is complete
        assert.is_true(images.mark_complete(ack.message_id))
        assert.is_true(images.notify_ready(assert(images.get(ack.message_id)), 70000))
        assert.same({ error = 0, message_id = ack.message_id, sender_id = a.uid,
            receiver_id = b.uid, img_name = img, total_size = "70000", thread_id = thread },
            assert(cb:wait_push(1039, 5000)))
        page = assert(ca:request(1029, { thread_id = thread, message_id = ack.message_id - 1 }))
        assert.equal(2, page.chat_datas[1].status)
        assert.equal(1, page.chat_datas[1].msg_type)
        -- the thread list shows the thread
        local threads = assert(cb:request(1025, { uid = b.uid }))
        local found = false
        for _, t in ipairs(threads.threads) do found = found or t.thread_id == thread end
        assert.is_true(found)
        ca:close()
        cb:close()
    end)

    it("answers a resend of the same unique_id with the stored message", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        local img, uid = name(), uuid()
        local first = announce(ca, a, b, thread, img, uid)
        assert.same(first, announce(ca, a, b, thread, img, uid))
        assert.equal(1, cluster.count("SELECT COUNT(*) AS n FROM chat_message WHERE sender_id = ?"
            .. " AND unique_id = ?", a.uid, uid))
        -- on the other server too
        local ca2 = cluster.login(chat2.port, a)
        assert.same(first, announce(ca2, a, b, thread, img, uid))
        -- a text's unique_id is not an image's: stored as a new message
        local text = assert(ca2:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = { { content = "hi", unique_id = uid .. "t" } } }))
        local other = announce(ca2, a, b, thread, name(), uid .. "t")
        assert.equal(0, other.error)
        assert.is_true(other.message_id ~= text.chat_datas[1].message_id)
        -- no unique_id: never a resend
        local n1 = announce(ca2, a, b, thread, img, nil)
        local n2 = announce(ca2, a, b, thread, img, nil)
        assert.is_true(n1.message_id ~= n2.message_id)
        assert.equal("", n1.unique_id)
        ca:close()
        ca2:close()
    end)

    it("signs an HTTP URL of a complete image for its participants only (1049 -> 1050)", function()
        local a, b, c = cluster.user(), cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca, cb = cluster.login(chat1.port, a), cluster.login(chat2.port, b)
        local cc = cluster.login(chat1.port, c)
        local ack = announce(ca, a, b, thread, name(), uuid())
        local id = ack.message_id
        assert.same({ error = 1107, message_id = id }, ca:request(1049, { message_id = id }))
        assert(images.mark_complete(id))
        local before = os.time()
        for _, client in ipairs({ ca, cb }) do
            local rsp = assert(client:request(1049, { message_id = id }))
            assert.equal(0, rsp.error)
            assert.equal(id, rsp.message_id)
            assert.truthy(rsp.expires >= before + 300 and rsp.expires <= os.time() + 300)
            local path, e, s = rsp.url:match("^http://127%.0%.0%.1:8094(/files/%d+)%?e=(%d+)&s=(%x+)$")
            assert.equal("/files/" .. id, path, rsp.url)
            assert.equal(tostring(rsp.expires), e)
            assert.is_true(signed_url.verify(path, e, s))
        end
        assert.same({ error = 1106, message_id = id }, cc:request(1049, { message_id = id }))
        assert.same({ error = 1100, message_id = id + 1000000 },
            cc:request(1049, { message_id = id + 1000000 }))
        local text = assert(ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = { { content = "not an image" } } }))
        local tid = text.chat_datas[1].message_id
        assert.same({ error = 1100, message_id = tid }, ca:request(1049, { message_id = tid }))
        for _, chat in ipairs({ chat1, chat2 }) do -- the secret is never logged
            assert.is_nil(chat:log():find(signed_url.secret(), 1, true))
        end
        assert.same({ error = 1016, field = "message_id" }, ca:request(1049, { message_id = 0 }))
        assert.same({ error = 1001, field = "message_id" }, ca:request(1049, { message_id = "1" }))
        ca:close()
        cb:close()
        cc:close()
    end)

    it("answers 1049 with 1019 when no URL secret is configured", function()
        local bare = cluster.start_chat { env = { CHATHOST_RESOURCE_URL_SECRET = false } }
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(bare.port, a)
        local id = announce(ca, a, b, thread, name(), uuid()).message_id
        assert(images.mark_complete(id))
        assert.same({ error = 1019, message_id = id }, ca:request(1049, { message_id = id }))
        assert(bare:await("no image URL can be signed", 3000))
        ca:close()
        bare:stop()
    end)

    it("refuses strangers, other threads, bad names and bad fields, storing nothing", function()
        local a, b, c = cluster.user(), cluster.user(), cluster.user()
        local ab = cluster.befriend(a, b)
        local ac = cluster.befriend(a, c)
        local ca = cluster.login(chat1.port, a)
        local before = cluster.count("SELECT COUNT(*) AS n FROM chat_message WHERE sender_id = ?", a.uid)
        local stranger = cluster.user()
        assert.same({ error = 1015, field = "thread_id" }, announce(ca, a, stranger, ab, name(), uuid()))
        assert.same({ error = 1015, field = "thread_id" }, announce(ca, a, b, ac, name(), uuid()))
        for _, bad in ipairs({ "../x.png", "a/b.png", "", ("x"):rep(200), ("y"):rep(196) .. ".png",
            "x", ".png", "a.png/" }) do
            assert.same({ error = 1016, field = "name" }, announce(ca, a, b, ab, bad, uuid()), bad)
        end
        assert.same({ error = 1016, field = "name" }, announce(ca, a, b, ab, nil, uuid(),
            { name = host.null }))
        assert.same({ error = 1001, field = "name" }, announce(ca, a, b, ab, name(), uuid(),
            { name = 12 }))
        for _, md5 in ipairs({ "", ("0"):rep(31), ("0"):rep(33), ("g"):rep(32) }) do
            assert.same({ error = 1016, field = "md5" }, announce(ca, a, b, ab, name(), uuid(),
                { md5 = md5 }))
        end
        assert.same({ error = 1016, field = "unique_id" }, announce(ca, a, b, ab, name(),
            ("u"):rep(129)))
        assert.same({ error = 1015, field = "fromuid" }, announce(ca, a, b, ab, name(), uuid(),
            { fromuid = b.uid }))
        assert.same({ error = 1016, field = "touid" }, announce(ca, a, a, ab, name(), uuid()))
        assert.same({ error = 1016, field = "thread_id" }, announce(ca, a, b, ab, name(), uuid(),
            { thread_id = 0 }))
        assert.equal(before, cluster.count("SELECT COUNT(*) AS n FROM chat_message WHERE sender_id = ?",
            a.uid))
        -- not logged in
        local anon = assert(chat_client.connect(chat1.port))
        assert.same({ error = 1014 }, anon:request(1035, { touid = b.uid, thread_id = ab, md5 = MD5,
            name = name() }))
        anon:close()
        ca:close()
    end)
end)

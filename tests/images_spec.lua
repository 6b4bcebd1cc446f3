-- lib.images: the image names a chat image may have (never a path), the chat_message rows
-- of image messages, and notify_ready, which the resource role calls once an image's file
-- is complete: 1039 reaches the receiver on whichever chat server it is logged in, through
-- that server's ChatService.NotifyChatImgMsg, and a receiver that is offline or whose
-- server is dead costs a logged false, never an error.
local host = require "host"
local cluster = require "helpers.chat_cluster"
local redis, db = host.redis, host.db

local images = require "helpers.scripts_lib" "lib.images"

-- An image message of a to b in thread, status uploading: -> its row as images.get gives it
local function image_message(a, b, thread, name)
    local res = assert(db.exec("INSERT INTO chat_message (thread_id, sender_id, recv_id, content,"
        .. " status, msg_type) VALUES (?, ?, ?, ?, 3, 1)", thread, a.uid, b.uid, name))
    return assert(images.get(res.insert_id))
end

describe("lib.images", function()
    it("takes plain file names only", function()
        for _, name in ipairs({ "3f1c8a2e-1b2c-4d5e-8f90-123456789abc.png", "a.b", "A_b-9.JPEG",
            ("x"):rep(64) .. ".abcdefgh" }) do
            assert.is_true(images.valid_name(name), name)
        end
        for _, name in ipairs({ "../x.png", "a/b.png", "a\\b.png", "", ("x"):rep(200),
            ("x"):rep(196) .. ".png", ("x"):rep(65) .. ".png", "x.abcdefghi", ".png", "x.", "x",
            "-a.png", "_a.png", "a..png", "a.p-g", "a.png/", "a.png\0.jpg", "a b.png", "é.png",
            "a.b.c" }) do
            assert.is_false(images.valid_name(name), name)
        end
        assert.is_false(images.valid_name(12))
        assert.is_false(images.valid_name(nil))
    end)

    it("reads image messages, their participants, and marks them complete once", function()
        local a, b, c = cluster.user(), cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local row = image_message(a, b, thread, "img.png")
        assert.same({ thread, a.uid, b.uid, "img.png", 3, 1 },
            { row.thread_id, row.sender_id, row.recv_id, row.content, row.status, row.msg_type })
        assert.is_true(images.participant(a.uid, row))
        assert.is_true(images.participant(b.uid, row))
        assert.is_false(images.participant(c.uid, row))
        assert.is_false(images.complete(row))
        assert.is_true(images.mark_complete(row.message_id))
        assert.is_false(images.mark_complete(row.message_id)) -- ready already
        assert.is_true(images.complete(images.get(row.message_id)))
        local text = assert(db.exec("INSERT INTO chat_message (thread_id, sender_id, recv_id,"
            .. " content, status, msg_type) VALUES (?, ?, ?, 'img.png', 3, 0)", thread, a.uid, b.uid))
        assert.is_nil(images.get(text.insert_id)) -- a text message is no image
        assert.is_false(images.mark_complete(text.insert_id))
        assert.is_nil(images.get(text.insert_id + 1000000))
    end)
end)

describe("lib.images.notify_ready", function()
    local cl, chat1, chat2

    setup(function()
        cl = cluster.start {}
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    teardown(function() cl:stop() end)

    it("pushes 1039 to the receiver on its chat server, with the S2 client's types", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca, cb = cluster.login(chat1.port, a), cluster.login(chat2.port, b)
        local row = image_message(a, b, thread, "ready.png")
        assert.is_true(images.notify_ready(row, 123456789))
        assert.same({ error = 0, message_id = row.message_id, sender_id = a.uid,
            receiver_id = b.uid, img_name = "ready.png", total_size = "123456789",
            thread_id = thread }, assert(cb:wait_push(1039, 5000)))
        assert.is_true(ca:no_push(1039, 100)) -- the sender hears nothing
        ca:close()
        cb:close()
    end)

    it("answers false for an offline receiver and a dead server, and never raises", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local row = image_message(a, b, thread, "nobody.png")
        assert.is_false(images.notify_ready(row, 10))
        redis.call("SET", "uip_" .. b.uid, "a-dead-server", "EX", 60)
        assert.is_false(images.notify_ready(row, 10))
        redis.call("SET", "uip_" .. b.uid, chat2.name, "EX", 60) -- alive, b not there
        assert.is_false(images.notify_ready(row, 10))
        redis.call("DEL", "uip_" .. b.uid)
        assert.is_false(images.notify_ready(nil, 10))
    end)

    it("is a push a NotifyBatch may carry", function()
        local b = cluster.user()
        local cb = cluster.login(chat2.port, b)
        local body = host.json.encode { error = 0, message_id = 5, sender_id = 1,
            receiver_id = b.uid, img_name = "x.png", total_size = "1", thread_id = 2 }
        local rsp = assert(host.grpc.call("127.0.0.1:" .. chat2.rpc_port, "ChatService.NotifyBatch",
            { items = { { touid = b.uid, msg_id = 1039, body = body } } }))
        assert.same({ 0 }, rsp.errors)
        assert.equal("x.png", assert(cb:wait_push(1039, 5000)).img_name)
        cb:close()
    end)
end)

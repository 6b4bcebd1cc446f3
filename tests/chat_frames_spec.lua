-- A chat server role with the chat scripts facing bad clients (docs/protocol.md §5): an
-- oversized header, a body that is not JSON, an unknown id, half a frame and a close, a
-- client that never reads while pushes pile up; each is answered or dropped as the
-- protocol says and the server keeps serving everyone else. And a script edit that is live
-- on the next message of a connection that stays open.
local host = require "host"
local util = require "helpers.util"
local chat_client = require "helpers.chat_client"
local cluster = require "helpers.chat_cluster"
local redis = host.redis

local function header(id, len)
    return string.char(math.floor(id / 256), id % 256, math.floor(len / 256), len % 256)
end

describe("chat frames", function()
    local cl, chat, witness, witness_client

    setup(function()
        cl = cluster.start { chats = 1 }
        chat = cl.chats[1]
        witness = cluster.user()
        witness_client = cluster.login(chat.port, witness)
    end)

    teardown(function()
        witness_client:close()
        cl:stop()
    end)

    -- the logged-in witness is still served after each misbehaving client
    after_each(function()
        assert.same({ error = 0 }, witness_client:request(1023, { fromuid = witness.uid }))
    end)

    it("answers a header announcing 65535 bytes with 1016 and closes", function()
        local u = cluster.user()
        local c = cluster.login(chat.port, u)
        assert(c:send_raw(header(1017, 65535)))
        assert.same({ error = 1016, field = "body_len" }, c:wait_push(1018))
        assert.equal("closed", select(2, c:read_frame(2000)))
        assert(util.wait_until(function() return redis.call("EXISTS", "uip_" .. u.uid) == 0 end,
            3000, "cleanup"))
        c:close()
    end)

    it("answers a body that is not a JSON object with 1001 on the reply id", function()
        local u = cluster.user()
        local c = cluster.login(chat.port, u)
        for _, body in ipairs({ "nope", "[1]", "", "{\"uid\":", "[]", " [ ]" }) do
            assert(c:send(1007, body))
            assert.same({ error = 1001 }, c:wait_push(1008))
        end
        -- a uid written in hexadecimal is not JSON (lua-cjson took it by default)
        assert(c:send(1023, ('{"fromuid":0x%x}'):format(u.uid)))
        assert.same({ error = 1001 }, c:wait_push(1024))
        assert(c:send(1005, "garbage"))
        assert.same({ error = 1001 }, c:wait_push(1006))
        assert.equal(0, c:request(1023, { fromuid = u.uid }).error)
        c:close()
    end)

    it("ignores an unknown msg_id and keeps the connection", function()
        local u = cluster.user()
        local c = cluster.login(chat.port, u)
        assert(c:send(1031, { a = 1 }))
        assert(c:send(4242, { a = 1 }))
        assert.equal(0, c:request(1023, { fromuid = u.uid }).error)
        assert.is_true(c:no_push(1032, 100))
        c:close()
    end)

    it("survives half a frame followed by a close", function()
        local u = cluster.user()
        local c = cluster.login(chat.port, u)
        assert(c:send_raw(header(1017, 300) .. '{"fromuid":'))
        c:close()
        assert(util.wait_until(function() return redis.call("EXISTS", "uip_" .. u.uid) == 0 end,
            3000, "cleanup"))
    end)

    it("disconnects a client that never reads while being sent to", function()
        local reader, sender = cluster.user(), cluster.user()
        local thread = cluster.befriend(reader, sender)
        -- a client whose socket buffers only 4 KiB before it stops reading from the kernel
        local conn = assert(host.tcp.connect("127.0.0.1", chat.port,
            { timeout_ms = 5000, max_buffer = 4096 }))
        local r = setmetatable({ conn = conn, pushes = {} }, chat_client)
        assert.equal(0, r:request(1005, { uid = reader.uid, token = reader.token }).error)
        local s = cluster.login(chat.port, sender)
        local text = { { content = ("z"):rep(4000), unique_id = "u" },
            { content = ("y"):rep(4000), unique_id = "v" } } -- a body just below 8192 bytes
        local closed = false
        for i = 1, 3000 do
            local ack = assert(s:request(1017, { fromuid = sender.uid, touid = reader.uid,
                thread_id = thread, text_array = text }))
            assert.equal(0, ack.error)
            if i % 10 == 0 and redis.call("EXISTS", "usession_" .. reader.uid) == 0 then
                closed = true
                break
            end
        end
        assert.is_true(closed, "the reader was never disconnected")
        r:close()
        assert.equal(0, s:request(1023, { fromuid = sender.uid }).error)
        s:close()
    end)
end)

describe("chat scripts", function()
    it("serve an edited handler on the next message without dropping connections", function()
        redis.call("DEL", "chatservers")
        local chat = cluster.start_chat { copy_scripts = true }
        local u = cluster.user()
        local c = cluster.login(chat.port, u)
        local before = assert(c:request(1007, { uid = u.name }))
        assert.is_nil(before.edited)
        util.edit_file(chat.scripts .. "/chat/search.lua",
            "desc = user.desc, sex = user.sex, icon = user.icon }",
            "desc = user.desc, sex = user.sex, icon = user.icon, edited = true }")
        assert(util.wait_until(function()
            return c:request(1007, { uid = u.name }).edited
        end, 5000, "the edited search"))
        -- the same connection, still logged in
        assert.equal(0, c:request(1023, { fromuid = u.uid }).error)
        assert.equal(chat.name, redis.call("GET", "uip_" .. u.uid))
        c:close()
        chat:stop()
    end)
end)

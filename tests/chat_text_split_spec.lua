-- A 1017 whose 1018 would not fit in one frame (possible only with a max_body_bytes far
-- above the default): the stored messages are acknowledged in several 1018 frames, each
-- within 65535 bytes, and the peer gets the same bodies as 1019 (docs/protocol.md §5-6).
local host = require "host"
local cluster = require "helpers.chat_cluster"

describe("chat text too big for one reply frame", function()
    local cl

    setup(function()
        cl = cluster.start { chats = 1, chat = { max_body_bytes = 65535, text_max_bytes = 65000 } }
    end)

    teardown(function() cl:stop() end)

    it("is acknowledged and pushed in several frames, every message once", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local port = cl.chats[1].port
        local ca, cb = cluster.login(port, a), cluster.login(port, b)
        -- 32 items of 1990 bytes: the request fits in one frame, its 1018 does not
        local items = {}
        for i = 1, 32 do items[i] = { content = ("x"):rep(1990), unique_id = "{split-" .. i .. "}" } end
        local req = { fromuid = a.uid, touid = b.uid, thread_id = thread, text_array = items }
        assert.truthy(#host.json.encode(req) <= 65535)
        assert(ca:send(1017, req))
        local frames, seen = 0, {}
        while #seen < #items do
            local ack = assert(ca:wait_push(1018))
            assert.equal(0, ack.error)
            assert.truthy(#host.json.encode(ack) <= 65535)
            assert.same(ack, cb:wait_push(1019))
            frames = frames + 1
            for _, d in ipairs(ack.chat_datas) do seen[#seen + 1] = d.unique_id end
        end
        assert.truthy(frames >= 2, "one frame only")
        for i = 1, #items do assert.equal(items[i].unique_id, seen[i]) end
        assert.equal(#items, cluster.count(
            "SELECT COUNT(*) AS n FROM chat_message WHERE thread_id = ?", thread))
        ca:close()
        cb:close()
    end)
end)

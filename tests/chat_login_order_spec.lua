-- A login's reply (1006) is the first frame its session gets: a push to the user that
-- comes once the session is bound (from a session on this server, or from a peer server
-- through ChatService) waits for the 1006 and follows it. The race is made certain with a
-- login script that, for a user marked in Redis, stops after binding until the spec lets
-- it go on.
local host = require "host"
local util = require "helpers.util"
local cluster = require "helpers.chat_cluster"
local chat_client = require "helpers.chat_client"
local redis = host.redis

-- After the bind, a login of a uid with spec_hold_<uid> in Redis says so (spec_bound_<uid>)
-- and waits until the key is gone.
local function pause_after_bind(scripts)
    util.edit_file(scripts .. "/chat/login.lua",
        "\n    local ok, failed = bind%(session, uid, f.token%)\n    if not ok then return failed end\n", [[%0
    if host.redis.call("EXISTS", "spec_hold_" .. uid) == 1 then
        host.redis.call("SET", "spec_bound_" .. uid, "1")
        while host.redis.call("EXISTS", "spec_hold_" .. uid) == 1 do host.timer.sleep(5) end
    end
]])
end

describe("chat login reply before pushes", function()
    local plain, paused

    setup(function()
        plain = cluster.start_chat {}
        paused = cluster.start_chat { copy_scripts = true, edit = pause_after_bind }
    end)

    teardown(function()
        plain:stop()
        paused:stop()
    end)

    -- Starts b's login on the paused server and returns its client once b is bound.
    local function bound_login(b)
        redis.call("SET", "spec_hold_" .. b.uid, "1")
        local cb = assert(chat_client.connect(paused.port))
        assert(cb:send(1005, { uid = b.uid, token = b.token }))
        assert(util.wait_until(function() return redis.call("EXISTS", "spec_bound_" .. b.uid) == 1 end,
            5000, "the login to bind"))
        return cb
    end

    -- The first frame b reads is its 1006; the push follows.
    local function login_then_push(cb, b, ack)
        redis.call("DEL", "spec_hold_" .. b.uid)
        local id, body = cb:read_frame()
        assert.equal(1006, id)
        assert.same({ 0, b.uid }, { body.error, body.uid })
        assert.same(ack, cb:wait_push(1019))
    end

    it("holds a push from a session on the same server until the 1006 is sent", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(paused.port, a)
        local cb = bound_login(b)
        -- the push to b is handed to b's session in the same step as a's ack
        local ack = assert(ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = { { content = "early", unique_id = "{early-1}" } } }))
        assert.equal(0, ack.error)
        login_then_push(cb, b, ack)
        ca:close()
        cb:close()
    end)

    it("holds a push from a peer server until the 1006 is sent", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(plain.port, a)
        local cb = bound_login(b)
        local done = cluster.metric(plain, "chathost_chat_pushes_queue_done_total", 0)
        local ack = assert(ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = { { content = "early", unique_id = "{early-2}" } } }))
        assert.equal(0, ack.error)
        -- the peer's NotifyBatch has been answered: the push is in b's session
        assert(util.wait_until(function()
            return cluster.metric(plain, "chathost_chat_pushes_queue_done_total", 0) > done
        end, 5000, "the push through the peer"))
        login_then_push(cb, b, ack)
        ca:close()
        cb:close()
    end)
end)

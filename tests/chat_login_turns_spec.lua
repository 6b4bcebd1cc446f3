-- The chat role's admission of logins (docs/protocol.md §6): at most chat.login_concurrency
-- logins are in progress at once, the others wait their turn up to chat.login_wait_ms and
-- then get 1018 with nothing used up. Each login here is held in progress by its user's
-- lock, taken by the spec, so which login waits does not depend on timing.
local host = require "host"
local util = require "helpers.util"
local chat_client = require "helpers.chat_client"
local cluster = require "helpers.chat_cluster"
local redis = host.redis

local function hold_lock(u)
    assert(redis.call("SET", "lock:lock_" .. u.uid, "the-spec", "PX", 30000))
end

local function free_lock(u) redis.call("DEL", "lock:lock_" .. u.uid) end

-- Two users whose locks the spec holds, each with a 1005 sent to chat: -> a, b, ca, cb
local function two_held_logins(chat)
    local a, b = cluster.user(), cluster.user()
    hold_lock(a)
    hold_lock(b)
    local ca = assert(chat_client.connect(chat.port))
    local cb = assert(chat_client.connect(chat.port))
    assert(ca:send(1005, { uid = a.uid, token = a.token }))
    assert(cb:send(1005, { uid = b.uid, token = b.token }))
    return a, b, ca, cb
end

local function waiting(chat)
    return cluster.metric(chat, "chathost_chat_logins_waiting", 0)
end

describe("chat login turns", function()
    local status

    setup(function() status = cluster.start_status() end)
    teardown(function() status:stop() end)

    it("lets a login wait while login_concurrency logins are in progress, then serves it",
    function()
        local chat = cluster.start_chat { chat = { login_concurrency = 1, login_wait_ms = 20000,
            lock_wait_ms = 20000 } }
        local a, b, ca, cb = two_held_logins(chat)
        -- one of them holds the only turn (waiting for its lock), the other waits for the turn
        assert(util.wait_until(function() return waiting(chat) == 1 end, 5000,
            "a login waiting for its turn"))
        free_lock(a)
        free_lock(b)
        assert.equal(0, ca:wait_push(1006, 10000).error)
        assert.equal(0, cb:wait_push(1006, 10000).error)
        assert.equal(0, waiting(chat))
        ca:close()
        cb:close()
        chat:stop()
    end)

    it("answers 1018 to a login that waited login_wait_ms for its turn; its token still works",
    function()
        local chat = cluster.start_chat { chat = { login_concurrency = 1, login_wait_ms = 200,
            lock_wait_ms = 20000 } }
        local a, b, ca, cb = two_held_logins(chat)
        -- the one that did not get the turn is answered 1018 while the other still waits
        local first, rsp, late
        for _ = 1, 50 do
            local id, body = ca.conn:read_frame(100)
            if id then first, rsp, late = ca, host.json.decode(body), cb break end
            id, body = cb.conn:read_frame(100)
            if id then first, rsp, late = cb, host.json.decode(body), ca break end
        end
        assert.truthy(first, "a 1006")
        assert.same({ error = 1018 }, rsp)
        local turned_away = first == ca and a or b
        -- nothing of the turned-away login happened: its lock is still the spec's, its token
        -- unused
        assert.equal("the-spec", redis.call("GET", "lock:lock_" .. turned_away.uid))
        assert.equal(turned_away.token, redis.call("GET", "utoken_" .. turned_away.uid))
        free_lock(a)
        free_lock(b)
        assert.equal(0, late:wait_push(1006, 10000).error)
        assert.equal(0, first:request(1005, { uid = turned_away.uid, token = turned_away.token },
            10000).error)
        ca:close()
        cb:close()
        chat:stop()
    end)
end)

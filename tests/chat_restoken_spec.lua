-- The resource session token restoken_<uid> (lib.tokens.session_*): the chat login token,
-- used up by 1005, lives on as the token the resource channel checks for as long as the
-- chat session lives: written by the login that binds, refreshed by heartbeats, deleted
-- when the session ends, replaced by a newer login's (whose kicked session's end leaves
-- the new one alone).
local host = require "host"
local util = require "helpers.util"
local cluster = require "helpers.chat_cluster"
local redis = host.redis

local tokens = require "helpers.scripts_lib" "lib.tokens"

local function key(u) return "restoken_" .. u.uid end

describe("resource session token", function()
    local cl, chat1, chat2

    setup(function()
        cl = cluster.start { copy_scripts = true, edit = cluster.trace_on_close }
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    teardown(function() cl:stop() end)

    it("is the login's token after 1005, with the presence TTL, and goes when the session ends",
    function()
        local u = cluster.user()
        assert.is_false(tokens.session_valid(u.uid, u.token))
        local c = cluster.login(chat1.port, u)
        local sid = redis.call("GET", "usession_" .. u.uid)
        assert.equal(0, redis.call("EXISTS", "utoken_" .. u.uid)) -- the login used it up
        assert.is_true(tokens.session_valid(u.uid, u.token))
        assert.is_false(tokens.session_valid(u.uid, u.token:upper()))
        assert.is_false(tokens.session_valid(u.uid, ""))
        -- with the address the session came from (a bare 1045 is answered there only)
        assert.equal(u.token .. " 127.0.0.1", redis.call("GET", key(u)))
        assert.is_true(tokens.session_from(u.uid, "127.0.0.1:1"))
        assert.is_false(tokens.session_from(u.uid, "127.0.0.2:1"))
        local ttl = redis.call("TTL", key(u))
        assert.truthy(ttl > 0 and ttl <= cluster.CHAT.presence_ttl_s)
        c:close()
        assert(chat1:await(cluster.closed_line(sid), 3000))
        assert.is_false(tokens.session_valid(u.uid, u.token))
        assert.equal(0, redis.call("EXISTS", key(u)))
    end)

    it("is kept alive by the heartbeat", function()
        local u = cluster.user()
        local c = cluster.login(chat1.port, u)
        redis.call("EXPIRE", key(u), 3)
        assert.same({ error = 0 }, c:request(1023, { fromuid = u.uid }))
        assert.truthy(redis.call("TTL", key(u)) > 3)
        redis.call("DEL", key(u)) -- vanished (Redis flushed): the heartbeat writes it again
        assert.same({ error = 0 }, c:request(1023, { fromuid = u.uid }))
        assert.is_true(tokens.session_valid(u.uid, u.token))
        c:close()
    end)

    it("is replaced by a newer login's, which the kicked session's end leaves alone", function()
        local u = cluster.user()
        local first = cluster.login(chat1.port, u)
        local old = u.token
        local sid1 = redis.call("GET", "usession_" .. u.uid)
        local second = cluster.login(chat2.port, u)
        assert.same({ error = 0, uid = u.uid }, first:wait_push(1021))
        assert(chat1:await(cluster.closed_line(sid1), 3000))
        assert.is_false(tokens.session_valid(u.uid, old))
        assert.is_true(tokens.session_valid(u.uid, u.token))
        -- the same on one server
        local third = cluster.login(chat2.port, u)
        assert.same({ error = 0, uid = u.uid }, second:wait_push(1021))
        assert.equal("closed", select(2, second:read_frame(2000)))
        assert.is_true(tokens.session_valid(u.uid, u.token))
        third:close()
        assert(util.wait_until(function() return redis.call("EXISTS", key(u)) == 0 end, 3000,
            "restoken to go"))
        first:close()
        second:close()
    end)

    it("refreshes and closes only its own token", function()
        local uid = 900000000 + math.random(1, 99999)
        assert.is_true(tokens.session_open(uid, "tok-a", 60))
        assert.is_true(tokens.session_refresh(uid, "tok-a", 120))
        assert.truthy(redis.call("TTL", "restoken_" .. uid) > 60)
        assert.is_false(tokens.session_refresh(uid, "tok-b", 120))
        assert.is_true(tokens.session_close(uid, "tok-b")) -- not its token: nothing deleted
        assert.is_true(tokens.session_valid(uid, "tok-a"))
        assert.is_true(tokens.session_close(uid, "tok-a"))
        assert.is_false(tokens.session_valid(uid, "tok-a"))
        assert.is_nil((tokens.session_open(uid, "", 60)))
    end)
end)

-- The chat role's login, presence and load reporting (docs/protocol.md §5-6): logins
-- through the gate and the status role landing on the less loaded of two chat servers,
-- token and lock rules, last login wins on one server and across servers, heartbeats,
-- cleanup that never removes a newer login's keys, dead and stopped servers. Real role
-- processes, real sockets, Redis and MariaDB.
local host = require "host"
local roles = require "helpers.roles"
local util = require "helpers.util"
local http = require "helpers.http"
local chat_client = require "helpers.chat_client"
local cluster = require "helpers.chat_cluster"
local redis, db = host.redis, host.db

local password = dofile(host.root .. "/scripts/lib/password.lua")

local function gone(key, ms)
    return util.wait_until(function() return redis.call("EXISTS", key) == 0 end, ms or 3000,
        key .. " to go")
end

describe("chat login", function()
    local cl, chat1, chat2

    setup(function()
        -- on_close is traced: specs await the end of a cleanup before checking its effect
        cl = cluster.start { copy_scripts = true, edit = cluster.trace_on_close }
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    teardown(function() cl:stop() end)

    it("sends two users logging in through the gate to different chat servers", function()
        local gate = roles.start { role = "gate", config = function(port)
            return { gate = { port = port, admin_port = 0 }, status = { port = cl.status.port } }
        end }
        local hash = assert(host.crypto.hash_password("abc123"))
        local users = {}
        for i = 1, 2 do
            local tag = host.crypto.random_hex(4)
            local email = ("land%d.%s@example.com"):format(i, tag)
            local res = assert(db.exec("INSERT INTO user (name, email, pwd_hash) VALUES (?, ?, ?)",
                "land" .. i .. tag, email, hash))
            users[i] = { uid = res.insert_id, email = email }
        end
        local by_port = { [tostring(chat1.port)] = chat1, [tostring(chat2.port)] = chat2 }
        local landed, clients = {}, {}
        for i, u in ipairs(users) do
            local r = assert(http.post(gate.port, "/user_login",
                { email = u.email, passwd = password.xor("abc123") }))
            assert.equal(0, r.json.error)
            assert.equal(u.uid, r.json.uid)
            assert.equal(r.json.port, r.json.chatport)
            local server = by_port[r.json.chatport]
            assert.truthy(server, "a chat server of this spec: " .. tostring(r.json.chatport))
            landed[i] = server
            local c = assert(chat_client.connect(tonumber(r.json.chatport)))
            local rsp = assert(c:request(1005, { uid = u.uid, token = r.json.token }))
            assert.equal(0, rsp.error)
            assert.equal(u.email, rsp.email)
            assert.is_nil(rsp.pwd_hash)
            assert.is_nil(rsp.pwd)
            clients[i] = c
            -- the server reports its load: the next login sees it
            assert(util.wait_until(function()
                return tonumber(redis.call("HGET", "logincount", server.name)) == 1
            end, 3000, "logincount of " .. server.name))
        end
        assert.are_not.equal(landed[1].name, landed[2].name)
        for _, c in ipairs(clients) do c:close() end
        assert.equal(0, gate:stop())
    end)

    it("answers the profile, empty lists as [] and the token, never a password hash", function()
        local u = cluster.user { nick = "Nicky", desc = "about me", sex = 1 }
        local c = assert(chat_client.connect(chat1.port))
        assert(c:send(1005, { uid = u.uid, token = u.token }))
        local id, raw = c.conn:read_frame(5000)
        assert.equal(1006, id)
        assert.truthy(raw:find('"apply_list":[]', 1, true), raw)
        assert.truthy(raw:find('"friend_list":[]', 1, true), raw)
        assert.is_nil(raw:find("pwd", 1, true))
        local r = host.json.decode(raw)
        assert.same({ 0, u.uid, u.name, "Nicky", "about me", 1, u.email, u.token, u.icon },
            { r.error, r.uid, r.name, r.nick, r.desc, r.sex, r.email, r.token, r.icon })
        assert.equal(chat1.name, redis.call("GET", "uip_" .. u.uid))
        assert.truthy(redis.call("GET", "usession_" .. u.uid))
        for _, key in ipairs({ "uip_", "usession_" }) do
            local ttl = redis.call("TTL", key .. u.uid)
            assert.truthy(ttl > 0 and ttl <= cluster.CHAT.presence_ttl_s, key .. " ttl " .. ttl)
        end
        c:close()
    end)

    it("refuses a wrong, missing or expired token with 1010 and binds nothing", function()
        local u = cluster.user()
        local c = assert(chat_client.connect(chat1.port))
        local wrong = (u.token:sub(1, 1) == "0" and "1" or "0") .. u.token:sub(2)
        assert.same({ error = 1010 }, c:request(1005, { uid = u.uid, token = wrong }))
        assert.same({ error = 1010 }, c:request(1005, { uid = u.uid }))
        redis.call("DEL", "utoken_" .. u.uid)
        assert.same({ error = 1010 }, c:request(1005, { uid = u.uid, token = u.token }))
        assert.equal(0, redis.call("EXISTS", "uip_" .. u.uid))
        assert.same({ error = 1014 }, c:request(1023, { fromuid = u.uid }))
        c:close()
    end)

    it("answers 1001 for a wrong JSON type, 1016 for a bad uid, 1011 for an unknown user",
    function()
        local c = assert(chat_client.connect(chat1.port))
        assert.same({ error = 1001, field = "uid" }, c:request(1005, { uid = "1001", token = "x" }))
        assert.same({ error = 1016, field = "uid" }, c:request(1005, { token = "x" }))
        assert.same({ error = 1016, field = "uid" }, c:request(1005, { uid = -3, token = "x" }))
        local ghost = 2000000000 + host.crypto.random_uniform(100000)
        redis.call("SET", "utoken_" .. ghost, "tok", "EX", 60)
        assert.same({ error = 1011 }, c:request(1005, { uid = ghost, token = "tok" }))
        c:close()
    end)

    it("accepts a token on any chat server, not only the one status chose", function()
        local u = cluster.user()
        local a = cluster.login(chat2.port, u)
        a:close()
    end)

    it("uses a token up: a second login with it, here or elsewhere, answers 1010", function()
        local u = cluster.user()
        local token = u.token
        local a = assert(chat_client.connect(chat1.port))
        assert.equal(0, assert(a:request(1005, { uid = u.uid, token = token })).error)
        assert.is_nil(redis.call("GET", "utoken_" .. u.uid))
        for _, port in ipairs({ chat1.port, chat2.port }) do
            local again = assert(chat_client.connect(port))
            assert.same({ error = 1010 }, again:request(1005, { uid = u.uid, token = token }))
            again:close()
        end
        assert.same({ error = 0 }, a:request(1023, { fromuid = u.uid })) -- still logged in
        a:close()
    end)

    it("lets one of two logins racing with one token win, the other 1010", function()
        local u = cluster.user()
        local c1, c2 = assert(chat_client.connect(chat1.port)), assert(chat_client.connect(chat2.port))
        assert(c1:send(1005, { uid = u.uid, token = u.token }))
        assert(c2:send(1005, { uid = u.uid, token = u.token }))
        local r1, r2 = assert(c1:wait_push(1006)), assert(c2:wait_push(1006))
        local errs = { r1.error, r2.error }
        table.sort(errs)
        assert.same({ 0, 1010 }, errs)
        c1:close()
        c2:close()
    end)

    it("answers every other request before a successful login with 1014", function()
        local c = assert(chat_client.connect(chat1.port))
        for _, id in ipairs({ 1007, 1009, 1013, 1017, 1023, 1025, 1027, 1029 }) do
            assert.same({ error = 1014 }, c:request(id, { uid = 1001, fromuid = 1001 }))
        end
        c:close()
    end)

    it("answers 1018 and binds nothing when the user's lock cannot be had in time", function()
        local u = cluster.user()
        assert(redis.call("SET", "lock:lock_" .. u.uid, "someone-else", "PX", 10000))
        local c = assert(chat_client.connect(chat1.port))
        local t0 = host.timer.monotonic()
        assert.same({ error = 1018 }, c:request(1005, { uid = u.uid, token = u.token }))
        local waited = host.timer.monotonic() - t0
        assert.truthy(waited >= cluster.CHAT.lock_wait_ms - 50, "waited " .. waited)
        assert.equal(0, redis.call("EXISTS", "uip_" .. u.uid))
        assert.same({ error = 1014 }, c:request(1025, {}))
        assert.equal("someone-else", redis.call("GET", "lock:lock_" .. u.uid)) -- never taken
        redis.call("DEL", "lock:lock_" .. u.uid)
        assert.equal(0, c:request(1005, { uid = u.uid, token = u.token }).error)
        assert.equal(0, redis.call("EXISTS", "lock:lock_" .. u.uid)) -- released after use
        c:close()
    end)

    it("lets the last login win: 1021 and close for the older session here, then elsewhere",
    function()
        local u = cluster.user()
        local first = cluster.login(chat1.port, u)
        local sid1 = redis.call("GET", "usession_" .. u.uid)
        local second = cluster.login(chat1.port, u)
        assert.same({ error = 0, uid = u.uid }, first:wait_push(1021))
        assert.equal("closed", select(2, first:read_frame(2000)))
        local sid = redis.call("GET", "usession_" .. u.uid)
        assert.equal(chat1.name, redis.call("GET", "uip_" .. u.uid))
        assert.equal(0, second:request(1023, { fromuid = u.uid }).error)

        local third = cluster.login(chat2.port, u)
        assert.same({ error = 0, uid = u.uid }, second:wait_push(1021))
        assert.equal("closed", select(2, second:read_frame(2000)))
        assert.equal(chat2.name, redis.call("GET", "uip_" .. u.uid))
        local sid3 = redis.call("GET", "usession_" .. u.uid)
        assert.are_not.equal(sid, sid3)
        -- the kicked sessions' cleanup ran (both were on chat1) and left the newest
        -- login's keys alone
        assert(chat1:await(cluster.closed_line(sid1), 3000))
        assert(chat1:await(cluster.closed_line(sid), 3000))
        assert.equal(chat2.name, redis.call("GET", "uip_" .. u.uid))
        assert.equal(sid3, redis.call("GET", "usession_" .. u.uid))
        assert.equal(0, third:request(1023, { fromuid = u.uid }).error)
        first:close()
        second:close()
        third:close()
        assert(gone("usession_" .. u.uid))
        assert.equal(0, redis.call("EXISTS", "uip_" .. u.uid))
    end)

    it("logs in although the presence names a chat server that is gone", function()
        local u = cluster.user()
        redis.call("SET", "uip_" .. u.uid, "a-dead-server", "EX", 60)
        redis.call("SET", "usession_" .. u.uid, "an-old-session", "EX", 60)
        local c = cluster.login(chat1.port, u)
        assert.equal(chat1.name, redis.call("GET", "uip_" .. u.uid))
        c:close()
    end)

    it("refreshes the presence TTLs on a heartbeat and refuses another uid in it", function()
        local u = cluster.user()
        local c = cluster.login(chat1.port, u)
        redis.call("EXPIRE", "uip_" .. u.uid, 5)
        redis.call("EXPIRE", "usession_" .. u.uid, 5)
        assert.same({ error = 0 }, c:request(1023, { fromuid = u.uid }))
        assert.truthy(redis.call("TTL", "uip_" .. u.uid) > 5)
        assert.truthy(redis.call("TTL", "usession_" .. u.uid) > 5)
        assert.same({ error = 1015, field = "fromuid" }, c:request(1023, { fromuid = u.uid + 1 }))
        c:close()
    end)

    it("closes a session with 1021 when its heartbeat finds a newer login's keys", function()
        local u = cluster.user()
        local c = cluster.login(chat1.port, u)
        local sid = redis.call("GET", "usession_" .. u.uid)
        redis.call("SET", "usession_" .. u.uid, "a-newer-login", "EX", 60)
        assert(c:send(1023, { fromuid = u.uid }))
        assert.same({ error = 0, uid = u.uid }, c:wait_push(1021))
        assert.equal("closed", select(2, c:read_frame(2000)))
        assert(chat1:await(cluster.closed_line(sid), 3000)) -- its cleanup has run
        assert.equal("a-newer-login", redis.call("GET", "usession_" .. u.uid))
        c:close()
    end)

    it("removes the presence keys when the connection closes", function()
        local u = cluster.user()
        local c = cluster.login(chat2.port, u)
        c:close()
        assert(gone("uip_" .. u.uid))
        assert(gone("usession_" .. u.uid))
    end)
end)

describe("chat servers seen by the status role", function()
    local status

    setup(function()
        redis.call("DEL", "chatservers")
        status = cluster.start_status()
    end)

    teardown(function() status:stop() end)

    local function pick()
        local r = assert(host.grpc.call("127.0.0.1:" .. status.port, "StatusService.GetChatServer",
            { uid = 1001 }))
        assert.equal(0, r.error)
        return r.port
    end

    it("stop choosing a chat server that was killed once its liveness expires", function()
        local a = cluster.start_chat()
        local b = cluster.start_chat()
        local seen = {}
        for _ = 1, 6 do seen[pick()] = true end
        assert.truthy(seen[tostring(b.port)], "b chosen while alive")
        b.proc:kill("KILL")
        b.proc:wait()
        assert(gone("chatserver_" .. b.name, 5000))
        for _ = 1, 10 do assert.equal(tostring(a.port), pick()) end
        b:stop()
        a:stop()
    end)

    it("stops choosing a killed chat server at its next probe, before its liveness expires",
    function()
        local a = cluster.start_chat { chat = { alive_ttl_s = 60 } }
        local b = cluster.start_chat { chat = { alive_ttl_s = 60 } }
        local seen = {}
        for _ = 1, 6 do seen[pick()] = true end
        assert.truthy(seen[tostring(b.port)], "b chosen while alive")
        b.proc:kill("KILL")
        b.proc:wait()
        -- status.probe_interval_ms is 1 s: b is left out well within the 5 s waited here
        assert(util.wait_until(function()
            for _ = 1, 4 do if pick() ~= tostring(a.port) then return false end end
            return true
        end, 5000, "status to leave b out"))
        assert.equal(1, redis.call("EXISTS", "chatserver_" .. b.name)) -- not by its TTL
        redis.call("DEL", "chatserver_" .. b.name)
        redis.call("SREM", "chatservers", b.name)
        redis.call("HDEL", "logincount", b.name)
        b:stop()
        a:stop()
    end)

    it("sends no logins to a chat server that is full, and again once it has room", function()
        local a = cluster.start_chat { chat = { max_connections = 2 } }
        local b = cluster.start_chat()
        local function picks()
            local seen = {}
            for _ = 1, 6 do seen[pick()] = true end
            return seen
        end
        assert.truthy(picks()[tostring(a.port)], "a chosen while it has room")
        local held = {}
        for i = 1, 2 do held[i] = assert(chat_client.connect(a.port)) end
        assert(a:await("chat.max_connections reached"))
        local seen = picks()
        assert.is_nil(seen[tostring(a.port)])
        assert.truthy(seen[tostring(b.port)])
        held[1]:close()
        assert(a:await("room for connections again"))
        assert(util.wait_until(function() return picks()[tostring(a.port)] end, 5000,
            "a chosen again"))
        held[2]:close()
        b:stop()
        a:stop()
    end)

    it("withdraws at once on a clean stop and drops its sessions' presence", function()
        local a = cluster.start_chat()
        local u = cluster.user()
        local c = cluster.login(a.port, u)
        assert(util.wait_until(function()
            return tonumber(redis.call("HGET", "logincount", a.name)) == 1
        end, 3000, "the load report"))
        assert.equal(0, a:stop())
        assert.equal(0, redis.call("EXISTS", "chatserver_" .. a.name))
        assert.is_nil(redis.call("HGET", "logincount", a.name))
        assert.equal(0, redis.call("SISMEMBER", "chatservers", a.name))
        assert.equal(0, redis.call("EXISTS", "uip_" .. u.uid))
        c:close()
    end)

    it("never sends logins to a chat server whose MySQL does not answer (started without the password)",
    function()
        local a = cluster.start_chat()
        local name = "cs" .. host.crypto.random_hex(4)
        local b = roles.start { role = "chat", name = name, env = { CHATHOST_MYSQL_PASSWORD = "wrong" },
            config = function(port)
                local chat = {}
                for k, v in pairs(cluster.CHAT) do chat[k] = v end
                chat.instances = { [name] = { port = port, rpc_port = roles.free_port(), admin_port = 0 } }
                return { chat = chat }
            end }
        -- start() has made its first report: it found MySQL failing and said so; peers still
        -- find its address (its users may be connected), status sends nobody there
        assert.matches("MySQL does not answer %(.*%): announced as db_down", b:log())
        local live = host.json.decode(assert(redis.call("GET", "chatserver_" .. name)))
        assert.is_true(live.db_down)
        for _ = 1, 6 do assert.equal(tostring(a.port), pick()) end
        b:stop()
        a:stop()
    end)

    it("closes a silent connection after the heartbeat timeout and cleans up", function()
        local a = cluster.start_chat { chat = { heartbeat_timeout_ms = 400 } }
        local u = cluster.user()
        local c = cluster.login(a.port, u)
        local v, err = c:read_frame(3000)
        assert.is_nil(v)
        assert.equal("closed", err)
        assert(gone("uip_" .. u.uid))
        c:close()
        a:stop()
    end)
end)

describe("chat login token after a failed step", function()
    local chat

    -- presence.set fails once for a uid marked with spec_fail_set_<uid> (as a Redis error
    -- would, after the token was used up)
    local function fail_set_once(scripts)
        util.edit_file(scripts .. "/chat/presence.lua", "\nfunction M%.set%(uid, session_id%)\n", [[%0
    if host.redis.call("DEL", "spec_fail_set_" .. uid) == 1 then return nil, "spec failure" end
]])
    end

    setup(function() chat = cluster.start_chat { copy_scripts = true, edit = fail_set_once } end)
    teardown(function() chat:stop() end)

    it("gives the token back, so the retry the error invites logs in with it", function()
        local u = cluster.user()
        assert(redis.call("SET", "spec_fail_set_" .. u.uid, "1"))
        local c = assert(chat_client.connect(chat.port))
        local r = assert(c:request(1005, { uid = u.uid, token = u.token }))
        assert.equal(1019, r.error)
        assert.equal(u.token, redis.call("GET", "utoken_" .. u.uid))
        local again = assert(c:request(1005, { uid = u.uid, token = u.token }))
        assert.equal(0, again.error)
        assert.is_nil(redis.call("GET", "utoken_" .. u.uid)) -- used up by the login that succeeded
        c:close()
    end)
end)

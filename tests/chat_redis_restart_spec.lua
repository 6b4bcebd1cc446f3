-- Redis lost everything (restarted empty, flushed) under two chat servers (issue 10, item
-- 1): the servers announce their liveness, load and every session's presence again at
-- once, so a message to a user online on the other server is pushed, not only stored,
-- without waiting for heartbeats (these clients send none).
local host = require "host"
local rs = require "helpers.redis_server"
local cluster = require "helpers.chat_cluster"
local chat_client = require "helpers.chat_client"
local roles = require "helpers.roles"
local util = require "helpers.util"

describe("chat servers after Redis lost its keys", function()
    timeout(30000)
    local srv, r, chats, a, b, ca, cb, thread

    -- A login with a token issued in the private Redis.
    local function login(port, u)
        u.token = host.crypto.random_hex(16)
        assert(r:call("SET", "utoken_" .. u.uid, u.token, "EX", 3600))
        local c = assert(chat_client.connect(port))
        assert.equal(0, assert(c:request(1005, { uid = u.uid, token = u.token })).error)
        return c
    end

    -- A private Redis, two chat servers on it (reporting every report_ms), a on the first
    -- and b on the second.
    local function start_system(report_ms)
        srv = rs.start {}
        r = host.redis.new { host = "127.0.0.1", port = srv.port, pool_size = 1 }
        local env = { CHATHOST_REDIS_PORT = tostring(srv.port) }
        chats = {}
        for i = 1, 2 do
            chats[i] = cluster.start_chat { env = env, redis = r,
                chat = { report_interval_ms = report_ms } }
        end
        a, b = cluster.user(), cluster.user()
        thread = cluster.befriend(a, b)
        ca = login(chats[1].port, a)
        cb = login(chats[2].port, b)
    end

    local function stop_system()
        if ca then ca:close() end
        if cb then cb:close() end
        for _, c in ipairs(chats or {}) do c:stop() end
        if r then r:close() end
        if srv then srv:stop() end
        srv, r, chats, ca, cb = nil, nil, nil, nil, nil
    end

    after_each(stop_system) -- also when an assertion failed half-way

    local function presence_back()
        assert(util.wait_until(function()
            return r:call("GET", "uip_" .. a.uid) == chats[1].name
                and r:call("GET", "uip_" .. b.uid) == chats[2].name
                and r:call("EXISTS", "chatserver_" .. chats[1].name) == 1
                and r:call("EXISTS", "chatserver_" .. chats[2].name) == 1
        end, 5000, "presence and liveness written again"))
        assert.equal(1, r:call("HEXISTS", "logincount", chats[2].name))
    end

    local function text_is_pushed(content)
        local ack = assert(ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = { { content = content, unique_id = host.crypto.random_hex(8) } } }))
        assert.equal(0, ack.error)
        local push = assert(cb:wait_push(1019, 5000))
        assert.equal(content, push.chat_datas[1].content)
    end

    it("writes presence and liveness again when Redis restarts empty", function()
        -- reports a minute apart: only host.redis.on_reconnect can bring them back in time
        start_system(60000)
        text_is_pushed("before the restart")
        srv:kill()
        srv:restart()
        presence_back()
        text_is_pushed("after the restart")
    end)

    it("writes them again when the keys are flushed while the connection stays", function()
        start_system(300)
        assert.equal("OK", r:call("FLUSHALL"))
        presence_back() -- the next load report finds its liveness key gone
        text_is_pushed("after the flush")
    end)
end)

describe("status after Redis restarted", function()
    timeout(30000)

    it("reads its view of the chat servers again once Redis is back", function()
        local srv = rs.start {}
        local r = host.redis.new { host = "127.0.0.1", port = srv.port, pool_size = 1 }
        local status = roles.start { role = "status", env = { CHATHOST_REDIS_PORT = tostring(srv.port) },
            config = function(port)
                -- a view this stale is served for 10 minutes: only the reconnect renews it
                return { status = { port = port, admin_port = 0, servers_refresh_ms = 10000,
                    probe_interval_ms = 0 } }
            end }
        local function announce(name, port)
            assert(r:call("SET", "chatserver_" .. name, host.json.encode({ host = "127.0.0.1",
                port = port }), "EX", 60))
            assert(r:call("SADD", "chatservers", name))
        end
        local function pick()
            local rsp = assert(host.grpc.call("127.0.0.1:" .. status.port,
                "StatusService.GetChatServer", { uid = 1001 }))
            return rsp.port
        end
        announce("before", 7101)
        assert.equal("7101", pick())
        srv:kill()
        srv:restart() -- empty: "before" is gone, "after" announces itself
        assert(util.wait_until(function() return r:call("PING") == "PONG" end, 5000, "redis back"))
        announce("after", 7102)
        assert(status:await("connected again"))
        assert(util.wait_until(function() return pick() == "7102" end, 5000, "the view read again"))
        assert.equal(0, status:stop())
        r:close()
        srv:stop()
    end)
end)

describe("host.redis.on_reconnect", function()
    timeout(30000)

    it("runs after a lost connection, not after commands that only timed out", function()
        local srv = rs.start {}
        local dir = assert(host.fs.mkdtemp("onreconnect"))
        -- a process that pings its Redis every 50 ms and says when on_reconnect runs
        assert(host.fs.write(dir .. "/ping.lua", [[
local host = require "host"
host.redis.on_reconnect(function() print("on_reconnect ran") io.stdout:flush() end)
print("ready") io.stdout:flush()
for _ = 1, 400 do
    host.redis.call("PING")
    host.timer.sleep(50)
end
]]))
        local p = assert(host.proc.spawn({ util.bin(), "exec", dir .. "/ping.lua" }, {
            stdout = "capture", stderr = "capture",
            env = { CHATHOST_REDIS_PORT = tostring(srv.port), CHATHOST_LOG_LEVEL = "info" } }))
        local function out() return (p:output()) end
        local function stderr() return select(2, p:output()) end
        assert(util.wait_until(function() return out():find("ready", 1, true) end, 5000, "ready"))
        -- a stopped server: commands time out, the connection is broken and made again
        srv:pause()
        assert(util.wait_until(function() return stderr():find("timeout", 1, true) end, 5000,
            "a command timeout"))
        srv:resume()
        assert(util.wait_until(function() return stderr():find("connected again", 1, true) end,
            5000, "the client back"))
        host.timer.sleep(300) -- several pings after it: on_reconnect would have run by now
        assert.is_nil(out():find("on_reconnect ran", 1, true))
        -- a server killed and started again (empty): the connection was lost
        srv:kill()
        srv:restart()
        assert(util.wait_until(function() return out():find("on_reconnect ran", 1, true) end,
            5000, "on_reconnect after the restart"))
        p:kill("TERM")
        p:wait()
        srv:stop()
        host.fs.rmtree(dir)
    end)
end)

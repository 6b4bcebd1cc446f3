-- Redis through Sentinel (issue 16): the host asks the sentinels for the master, checks
-- with ROLE that it is one, asks again on READONLY, and under chat load follows a kill -9
-- of the master to the promoted replica without a restart: logins and chat resume, every
-- acked message is stored once, and a login lock held at the switch ends with its TTL.
-- Real processes on loopback ports: tools/sentinel.sh's master, replica and three
-- sentinels; a stand-in sentinel (helpers/fake_sentinel.py) for the answers no real one
-- gives (a replica named as the master).
local host = require "host"
local rs = require "helpers.redis_server"
local cluster = require "helpers.chat_cluster"
local chat_client = require "helpers.chat_client"
local util = require "helpers.util"

local have = host.proc.run({ "sh", "-c", "command -v redis-sentinel" })
if not (have and have.code == 0) then
    local why = "redis-sentinel is not installed (tools/deps.sh installs it)"
    io.stderr:write(spec_file, ": SKIPPED: ", why, "\n")
    pending("Redis through Sentinel: skipped, " .. why)
    return
end

local SENTINEL_SH = host.root .. "/tools/sentinel.sh"
local MASTER_NAME = "chathost"

-- A direct client to one server (a sentinel, a data node).
local function direct(port)
    return host.redis.new { host = "127.0.0.1", port = port, pool_size = 1 }
end

-- Waits until every sentinel knows one replica in good health and its two peers (else no
-- quorum and nobody to promote) and the master has that replica online.
local function trio_ready(t, master_port)
    for i = 2, 4 do
        local s = direct(t.base + i)
        assert(util.wait_until(function()
            local m = s:call("SENTINEL", "master", MASTER_NAME)
            local reps = s:call("SENTINEL", "replicas", MASTER_NAME)
            local f, rf = {}, {}
            for k = 1, #(m or {}), 2 do f[m[k]] = m[k + 1] end
            local r1 = reps and reps[1] or {}
            for k = 1, #r1, 2 do rf[r1[k]] = r1[k + 1] end
            return f.port == tostring(master_port) and f["num-other-sentinels"] == "2"
                and reps and #reps == 1 and rf.flags == "slave" and rf["master-link-status"] == "ok"
        end, 20000, "sentinel " .. (t.base + i) .. " to know the replica and its peers"))
        s:close()
    end
    local m = direct(master_port)
    assert(util.wait_until(function()
        return (m:call("INFO", "replication") or ""):find("slave0:[^\n]*state=online") ~= nil
    end, 20000, "the replica online"))
    m:close()
end

-- tools/sentinel.sh's five processes under a fresh directory -> {dir, base, sentinels},
-- ready for a failover
local function start_trio()
    local dir = assert(host.fs.mkdtemp("sentinel"))
    for _ = 1, 5 do
        local base = 20000 + 5 * host.crypto.random_uniform(2390)
        local r = assert(host.proc.run({ SENTINEL_SH, "start", dir, tostring(base) },
            { timeout_ms = 30000 }))
        if r.code == 0 then
            local t = { dir = dir, base = base, sentinels = {} }
            for i = 2, 4 do t.sentinels[#t.sentinels + 1] = "127.0.0.1:" .. (base + i) end
            trio_ready(t, base)
            return t
        end
        host.proc.run({ SENTINEL_SH, "stop", dir })
    end
    host.fs.rmtree(dir)
    error("tools/sentinel.sh did not start")
end

-- The master the sentinels name now -> its port, and the pid of its process
local function current_master(t)
    local s = direct(t.base + 2)
    local a = assert(s:call("SENTINEL", "get-master-addr-by-name", MASTER_NAME))
    s:close()
    local port = tonumber(a[2])
    local node = port == t.base and "master" or "replica"
    return port, assert(tonumber(host.fs.read(t.dir .. "/" .. node .. "/redis.pid")))
end

local function stop_trio(t)
    host.proc.run({ SENTINEL_SH, "stop", t.dir }, { timeout_ms = 30000 })
    host.fs.rmtree(t.dir)
end

describe("redis client in sentinel mode, with a stand-in sentinel", function()
    timeout(30000)
    local dir, fake, fake_port, master, other, replica

    -- What the stand-in answers as the master from now on.
    local function name_master(srv)
        assert(host.fs.write(dir .. "/master", "127.0.0.1 " .. srv.port .. "\n"))
    end

    before_each(function()
        dir = assert(host.fs.mkdtemp("fakesentinel"))
        master, other, replica = rs.start {}, rs.start {}, rs.start {}
        local r = direct(replica.port)
        assert.equal("OK", r:call("REPLICAOF", "127.0.0.1", master.port))
        -- writable: a client that skipped the ROLE check would write to it unnoticed
        assert.equal("OK", r:call("CONFIG", "SET", "replica-read-only", "no"))
        r:close()
        name_master(replica)
        fake = assert(host.proc.spawn({ "/usr/bin/python3", host.root .. "/tests/helpers/fake_sentinel.py",
            dir .. "/master" }, { stdout = "capture", stderr = "capture" }))
        assert(util.wait_until(function() return (fake:output()):match("ready (%d+)") end, 5000,
            "the stand-in sentinel"))
        fake_port = tonumber((fake:output()):match("ready (%d+)"))
    end)

    after_each(function()
        if fake then fake:kill("KILL") fake:wait() end
        for _, s in ipairs({ replica, master, other }) do s:stop() end
        host.fs.rmtree(dir)
    end)

    local function client()
        return host.redis.new { sentinels = { "127.0.0.1:" .. fake_port }, master_name = "m",
            pool_size = 1, reconnect_min_ms = 10, reconnect_max_ms = 50 }
    end

    it("refuses a replica the sentinels name as the master, and asks again", function()
        local c = client()
        local v, err = c:call("SET", "k", "through the client")
        assert.is_nil(v)
        assert.matches("not a master %(ROLE says slave%)", err)
        local r = direct(replica.port)
        assert.is_nil(r:call("GET", "k")) -- nothing was written to the replica
        name_master(master)
        assert(util.wait_until(function() return c:call("SET", "k", "through the client") == "OK" end,
            5000, "the client on the real master"))
        local m = direct(master.port)
        assert.equal("through the client", m:call("GET", "k"))
        assert.equal("127.0.0.1:" .. master.port, c:stats().master)
        c:close() r:close() m:close()
    end)

    it("asks again when its master turned replica (READONLY)", function()
        name_master(master)
        local c = client()
        assert.equal("OK", c:call("SET", "k", "1"))
        local asked = tonumber(host.fs.read(dir .. "/master.asked"))
        -- a failover the client did not hear of: the master follows another, which the
        -- sentinels now name
        name_master(other)
        local m = direct(master.port)
        assert.equal("OK", m:call("REPLICAOF", "127.0.0.1", other.port))
        local v, err = c:call("SET", "k", "2")
        assert.is_nil(v)
        assert.matches("^READONLY", err)
        assert(util.wait_until(function() return c:call("SET", "k2", "on the new master") == "OK" end,
            5000, "the client on the new master"))
        assert(tonumber(host.fs.read(dir .. "/master.asked")) > asked)
        local o = direct(other.port)
        assert.equal("on the new master", o:call("GET", "k2"))
        assert.equal(1, c:stats().failovers)
        c:close() m:close() o:close()
    end)

    it("moves to the new master on +switch-master, without waiting for an error", function()
        name_master(master)
        -- reconnects 5 s apart: only the message can bring it to the new master before then
        local c = host.redis.new { sentinels = { "127.0.0.1:" .. fake_port }, master_name = "m",
            pool_size = 2, reconnect_min_ms = 5000, reconnect_max_ms = 5000 }
        assert.equal("OK", c:call("SET", "k", "on the old master"))
        assert(util.wait_until(function() return c:stats().connected == 2 end, 5000, "both connected"))
        name_master(other)
        assert(host.fs.write(dir .. "/master.switch",
            ("other-name 127.0.0.1 %d 127.0.0.1 %d"):format(master.port, replica.port)))
        assert(fake:kill("USR1")) -- another master's switch: ignored
        assert(host.fs.write(dir .. "/master.switch",
            ("m 127.0.0.1 %d 127.0.0.1 %d"):format(master.port, other.port)))
        assert(fake:kill("USR1"))
        assert(util.wait_until(function()
            local st = c:stats()
            return st.master == "127.0.0.1:" .. other.port and st.connected == 2
        end, 4000, "the pool on the new master"))
        assert.equal(1, c:stats().failovers)
        assert.equal("OK", c:call("SET", "k", "on the new master"))
        local o = direct(other.port)
        assert.equal("on the new master", o:call("GET", "k"))
        c:close() o:close()
    end)

    it("runs host.redis.on_reconnect after a switch, as after a lost connection", function()
        name_master(master)
        local pdir = assert(host.fs.mkdtemp("switchreconnect"))
        assert(host.fs.write(pdir .. "/ping.lua", [[
local host = require "host"
host.redis.on_reconnect(function()
    print("on_reconnect ran on " .. host.redis.stats().master) io.stdout:flush()
end)
assert(host.redis.call("PING"))
print("ready") io.stdout:flush()
for _ = 1, 400 do
    host.redis.call("PING")
    host.timer.sleep(50)
end
]]))
        local p = assert(host.proc.spawn({ util.bin(), "exec", pdir .. "/ping.lua" }, {
            stdout = "capture", stderr = "capture",
            env = { CHATHOST_REDIS_SENTINELS = "127.0.0.1:" .. fake_port,
                CHATHOST_REDIS_MASTER_NAME = "m" } }))
        local function out() return (p:output()) end
        assert(util.wait_until(function() return out():find("ready", 1, true) end, 5000, "ready"))
        name_master(other)
        assert(host.fs.write(dir .. "/master.switch",
            ("m 127.0.0.1 %d 127.0.0.1 %d"):format(master.port, other.port)))
        assert(fake:kill("USR1"))
        assert(util.wait_until(function() return out():find("on_reconnect ran", 1, true) end,
            5000, "on_reconnect after the switch"))
        assert.matches("on_reconnect ran on 127%.0%.0%.1:" .. other.port, out())
        p:kill("TERM")
        p:wait()
        host.fs.rmtree(pdir)
    end)

    it("gives a sentinel that does not answer sentinel_timeout_ms, then asks the next", function()
        name_master(master)
        local silent = rs.start {}
        silent:pause() -- the kernel accepts the connection; nothing answers
        local function client_of(sentinels)
            return host.redis.new { sentinels = sentinels, master_name = "m", pool_size = 1,
                sentinel_timeout_ms = 100, reconnect_min_ms = 10, reconnect_max_ms = 50 }
        end
        local c = client_of({ "127.0.0.1:" .. silent.port })
        local v, err = c:call("PING")
        assert.is_nil(v)
        assert.matches("sentinel 127%.0%.0%.1:" .. silent.port .. ": timeout", err)
        c:close()
        c = client_of({ "127.0.0.1:" .. silent.port, "127.0.0.1:" .. fake_port })
        assert.equal("PONG", c:call("PING"))
        assert.equal("127.0.0.1:" .. master.port, c:stats().master)
        c:close()
        silent:stop()
    end)

    it("sends redis.sentinel_password to sentinels that want one", function()
        name_master(master)
        local guarded = assert(host.proc.spawn({ "/usr/bin/python3",
            host.root .. "/tests/helpers/fake_sentinel.py", dir .. "/master", "sentinel-pw" },
            { stdout = "capture", stderr = "capture" }))
        assert(util.wait_until(function() return (guarded:output()):match("ready (%d+)") end, 5000,
            "the guarded stand-in"))
        local port = tonumber((guarded:output()):match("ready (%d+)"))
        local function client_with(pw)
            return host.redis.new { sentinels = { "127.0.0.1:" .. port }, master_name = "m",
                sentinel_password = pw, pool_size = 1, reconnect_min_ms = 10, reconnect_max_ms = 50 }
        end
        local c = client_with(false)
        local v, err = c:call("PING")
        assert.is_nil(v)
        assert.matches("sentinel 127%.0%.0%.1:" .. port .. ": NOAUTH", err)
        c:close()
        c = client_with("wrong")
        v, err = c:call("PING")
        assert.is_nil(v)
        assert.matches("AUTH refused %(check redis%.sentinel_password%)", err)
        assert.is_nil(err:find("wrong", 1, true)) -- the password is not in the message
        c:close()
        c = client_with("sentinel-pw")
        assert.equal("PONG", c:call("PING"))
        c:close()
        guarded:kill("KILL")
        guarded:wait()
    end)

    it("answers nil, err naming the master when no sentinel knows it", function()
        assert(host.fs.write(dir .. "/master", ""))
        local c = client()
        local v, err = c:call("PING")
        assert.is_nil(v)
        assert.matches("no sentinel named master 'm' %(sentinel 127%.0%.0%.1:%d+: does not know that master%)",
            err)
        c:close()
    end)
end)

describe("Redis through real sentinels", function()
    timeout(90000)
    local trio, sr, chat, clients = nil, nil, nil, {}
    local load = { stop = false } -- the sender's loop runs until stop (set by the test, or here)

    after_each(function()
        load.stop = true
        for _, c in ipairs(clients) do c:close() end
        clients = {}
        if chat then chat:stop() end
        if sr then sr:close() end
        if trio then stop_trio(trio) end
        trio, sr, chat = nil, nil, nil
    end)

    -- A chat login of u with a fresh token written through the sentinels -> client, or
    -- nil, why (the token write or the login failed: the caller tries again).
    local function try_login(u)
        u.token = host.crypto.random_hex(16)
        local ok, err = sr:call("SET", "utoken_" .. u.uid, u.token, "EX", 3600)
        if not ok then return nil, "token: " .. tostring(err) end
        local c, cerr = chat_client.connect(chat.port)
        if not c then return nil, cerr end
        local r, rerr = c:request(1005, { uid = u.uid, token = u.token }, 5000)
        if r and r.error == 0 then
            clients[#clients + 1] = c
            return c
        end
        c:close()
        return nil, r and ("login answered " .. r.error) or rerr
    end

    local function login(u, within_ms, what)
        local c
        assert(util.wait_until(function()
            c = try_login(u)
            return c
        end, within_ms or 5000, what or ("login of " .. u.uid), 50))
        return c
    end

    it("follows a kill -9 of the master: logins and chat resume, no acked message is lost", function()
        trio = start_trio()
        sr = host.redis.new { sentinels = trio.sentinels, master_name = MASTER_NAME, pool_size = 1 }
        chat = cluster.start_chat { redis = sr, chat = { lock_ttl_ms = 10000 },
            env = { CHATHOST_REDIS_SENTINELS = table.concat(trio.sentinels, ","),
                CHATHOST_REDIS_MASTER_NAME = MASTER_NAME } }
        local a, b, c, d = cluster.user(), cluster.user(), cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local cb = login(b) -- online through the failover: every message is also pushed

        -- steady load: a sends one message after the other; one without an ack (an error,
        -- a lost connection) is sent again with the same unique_id until it is acked
        local acked, sent_after, refused, relogins = {}, 0, {}, 0
        load.stop = false
        local killed_at
        local sender = host.spawn(function()
            local ca = login(a)
            local i = 1
            while not load.stop do
                local uid = ("m%05d"):format(i)
                local ack = ca and ca:request(1017, { fromuid = a.uid, touid = b.uid,
                    thread_id = thread, text_array = { { content = "text " .. i, unique_id = uid } } },
                    3000)
                if ack and ack.error == 0 then
                    acked[#acked + 1] = uid
                    if killed_at then sent_after = sent_after + 1 end
                    i = i + 1
                elseif not ack then -- the connection is gone: log in again
                    if ca then ca:close() end
                    ca = try_login(a)
                    relogins = relogins + 1
                else
                    refused[ack.error] = (refused[ack.error] or 0) + 1
                end
                host.timer.sleep(10)
            end
        end)
        assert(util.wait_until(function() return #acked >= 20 end, 10000, "20 acked messages"))

        -- a login lock held at the switch (by a login that never ends), on both servers,
        -- with a lease longer than the failover takes
        local lock_key = "lock:lock_" .. d.uid
        assert.equal("OK", sr:call("SET", lock_key, "held at the switch", "PX", 10000))
        assert.equal(1, sr:call("WAIT", 1, 2000))

        local master_port, master_pid = current_master(trio)
        local replica_port = master_port == trio.base and trio.base + 1 or trio.base
        local chat_pid = chat.proc.pid
        assert(host.proc.signal(master_pid, "KILL"))
        killed_at = host.timer.monotonic()

        -- the roles follow the promoted replica without a restart
        -- (bounds for a loaded machine: a split leader election retries after 6 s)
        assert(chat:await("moved from 127.0.0.1:" .. master_port .. " to 127.0.0.1:" .. replica_port,
            30000))
        local cc = login(c, 30000, "a login after the failover")
        local first_login_ms = host.timer.monotonic() - killed_at
        assert.is_not_nil(cc)
        assert(util.wait_until(function() return sent_after >= 20 end, 20000,
            "20 messages acked after the failover"))
        -- the lock came through the switch, and its lease ends it: d logs in
        assert(util.wait_until(function() return sr:stats().master == "127.0.0.1:" .. replica_port end,
            10000, "the spec's own client on the new master"))
        local pttl = sr:call("PTTL", lock_key)
        assert(pttl and pttl > 0, "the lock on the new master, PTTL " .. tostring(pttl))
        login(d, 20000, "the login whose lock was held at the switch")
        load.stop = true
        assert(sender:wait(10000))
        -- b's session lived through the failover: still connected, its presence there
        -- (replicated, or written again by the server's on_reconnect), pushes reach it
        assert.is_false(cb:closed())
        assert(util.wait_until(function() return sr:call("GET", "uip_" .. b.uid) == chat.name end,
            5000, "b's presence on the new master"))
        local last = acked[#acked]
        local seen, pushed = nil, 0
        repeat
            local push = cb:wait_push(1019, 5000)
            seen = push and push.chat_datas[1].unique_id
            pushed = pushed + 1
        until not push or seen == last
        assert.equal(last, seen)
        -- what the failover cost, for README and bench/RESULTS.md
        local codes = {}
        for code, n in pairs(refused) do codes[#codes + 1] = code .. " x" .. n end
        io.stderr:write(("redis_sentinel_spec: first login %d ms after kill -9 of the master; "
            .. "%d texts acked (%d pushed to the peer), refused: %s; sender logged in again %d "
            .. "times\n"):format(first_login_ms, #acked, pushed,
            #codes > 0 and table.concat(codes, ", ") or "none", relogins))
        assert.is_false(chat.proc.exited)
        assert.equal(chat_pid, chat.proc.pid)
        assert.equal("127.0.0.1:" .. replica_port, sr:stats().master)
        assert.equal(1, cluster.metric(chat, "chathost_redis_failovers_total"))

        -- every acked message stored, once; nothing stored that was not acked
        assert.equal(#acked, cluster.count(
            "SELECT COUNT(*) AS n FROM chat_message WHERE thread_id = ?", thread))
        assert.equal(#acked, cluster.count(
            "SELECT COUNT(DISTINCT content) AS n FROM chat_message WHERE thread_id = ?", thread))
    end)
end)

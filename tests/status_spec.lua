-- The status role: least-loaded live chat server, tokens with a TTL, a hot-reloadable
-- selection policy; driven over real gRPC, with chat servers' liveness and load written to
-- Redis the way chat servers write them.
local host = require "host"
local roles = require "helpers.roles"
local util = require "helpers.util"
local py = require "helpers.grpc_py"
local redis = host.redis

local function alive(name, port, ttl)
    assert(redis.call("SET", "chatserver_" .. name,
        host.json.encode({ host = "127.0.0.1", port = port }), "EX", ttl or 30))
    assert(redis.call("SADD", "chatservers", name))
end

describe("status role", function()
    local status, target

    setup(function()
        status = roles.start { role = "status", copy_scripts = true, config = function(port)
            -- servers_refresh_ms = 0: every call reads Redis, so each test sees its own setup;
            -- no probes: nothing listens on these chat servers' ports
            return { status = { port = port, admin_port = 0, servers_refresh_ms = 0,
                probe_interval_ms = 0 }, chat = { instances = {
                chat1 = { host = "127.0.0.1", port = 8090, rpc_port = 50055 },
                chat2 = { host = "127.0.0.1", port = 8091, rpc_port = 50056 } } } }
        end }
        target = "127.0.0.1:" .. status.port
    end)

    teardown(function() assert.equal(0, status:stop()) end)

    before_each(function()
        redis.call("DEL", "chatserver_chat1", "chatserver_chat2", "chatserver_chat3", "chatservers",
            "logincount")
    end)

    local function pick(uid)
        return assert(host.grpc.call(target, "StatusService.GetChatServer", { uid = uid or 1001 }))
    end

    it("sends a user to the less loaded of two live chat servers", function()
        alive("chat1", 8090)
        alive("chat2", 8091)
        redis.call("HSET", "logincount", "chat1", 5, "chat2", 2)
        local rsp = pick()
        assert.equal(0, rsp.error)
        assert.equal("8091", rsp.port)
        redis.call("HSET", "logincount", "chat1", 1)
        assert.equal("8090", pick().port)
    end)

    it("passes along the WebSocket port a chat server announces (\"\" when none)", function()
        assert(redis.call("SET", "chatserver_chat1",
            host.json.encode({ host = "127.0.0.1", port = 8090, ws_port = 8096 }), "EX", 30))
        assert(redis.call("SADD", "chatservers", "chat1"))
        local rsp = pick()
        assert.same({ 0, "8090", "8096" }, { rsp.error, rsp.port, rsp.ws_port })
        alive("chat1", 8090)
        assert.equal("", pick().ws_port)
    end)

    it("spreads ties round-robin", function()
        alive("chat1", 8090)
        alive("chat2", 8091)
        local seen = {}
        for _ = 1, 4 do seen[pick().port] = true end
        assert.truthy(seen["8090"] and seen["8091"])
    end)

    it("counts the users it sent to a server since its last load report", function()
        -- a storm of logins between two reports: on the reported loads alone all 8 would go
        -- to storm_a
        alive("storm_a", 8092)
        alive("storm_b", 8093)
        redis.call("HSET", "logincount", "storm_a", 100, "storm_b", 104)
        local n = { ["8092"] = 0, ["8093"] = 0 }
        for i = 1, 8 do
            local port = pick(2000 + i).port
            n[port] = n[port] + 1
        end
        assert.same({ ["8092"] = 6, ["8093"] = 2 }, n)
        -- a new report is the load from then on
        redis.call("HSET", "logincount", "storm_a", 106, "storm_b", 100)
        assert.equal("8093", pick().port)
        redis.call("DEL", "chatserver_storm_a", "chatserver_storm_b")
    end)

    it("never picks a server whose liveness key expired", function()
        alive("chat1", 8090)
        alive("chat2", 8091, 1)
        redis.call("HSET", "logincount", "chat1", 50, "chat2", 0)
        assert.equal("8091", pick().port)
        assert(util.wait_until(function() return redis.call("EXISTS", "chatserver_chat2") == 0 end,
            3000, "the liveness key to expire"))
        -- the status role reads liveness at most every servers_refresh_ms
        assert(util.wait_until(function() return pick().port == "8090" end, 2000, "chat2 to be dropped"))
        for _ = 1, 5 do assert.equal("8090", pick().port) end
    end)

    it("knows chat servers that only announce themselves in Redis", function()
        alive("chat3", 9999)
        assert.equal("9999", pick().port)
    end)

    it("answers 1002 when no chat server is alive", function()
        local rsp = pick()
        assert.equal(1002, rsp.error)
        assert.equal("", rsp.token)
    end)

    it("issues a fresh 128-bit token per call, stored with a TTL, that Login accepts", function()
        alive("chat1", 8090)
        local a, b = pick(4242), pick(4242)
        assert.matches("^%x+$", a.token)
        assert.equal(32, #a.token)
        assert.are_not.equal(a.token, b.token)
        assert.equal(b.token, redis.call("GET", "utoken_4242"))
        local ttl = redis.call("TTL", "utoken_4242")
        assert.truthy(ttl > 50 and ttl <= 60, ttl) -- status.token_ttl_s: unused tokens go soon
        local ok = assert(host.grpc.call(target, "StatusService.Login", { uid = 4242, token = b.token }))
        assert.same({ error = 0, uid = 4242, token = b.token }, ok)
        local old = assert(host.grpc.call(target, "StatusService.Login", { uid = 4242, token = a.token }))
        assert.equal(1010, old.error)
        local none = assert(host.grpc.call(target, "StatusService.Login", { uid = 4243, token = "" }))
        assert.equal(1010, none.error)
    end)

    it("rejects a uid that is not positive", function()
        alive("chat1", 8090)
        assert.equal(1011, pick(0).error)
        assert.equal(1011, pick(-5).error)
    end)

    it("applies an edited policy script without a restart", function()
        alive("chat1", 8090)
        alive("chat2", 8091)
        redis.call("HSET", "logincount", "chat1", 9, "chat2", 1)
        assert.equal("8091", pick().port)
        local path = status.scripts .. "/status/policy.lua"
        local original = assert(host.fs.read(path))
        assert(host.fs.write(path, [[
local M = {}
-- the most loaded server (a test policy)
function M.choose(servers)
    local best
    for _, s in ipairs(servers) do if not best or s.load > best.load then best = s end end
    return best
end
return M
]]))
        assert(util.wait_until(function() return pick().port == "8090" end, 5000, "the new policy"))
        assert(host.fs.write(path, original))
        assert(util.wait_until(function() return pick().port == "8091" end, 5000, "the old policy"))
    end)

    it("falls back to the least loaded server, logging a policy error, when the policy raises or "
        .. "returns no server", function()
        alive("chat1", 8090)
        alive("chat2", 8091)
        -- far apart: each pick adds a user to chat2's estimated load (users sent since its
        -- last report), and the loop below picks many times
        redis.call("HSET", "logincount", "chat1", 1000000, "chat2", 1)
        local path = status.scripts .. "/status/policy.lua"
        local original = assert(host.fs.read(path))
        local log_before = #status:log()
        for _, case in ipairs {
            { 'error("spec: the policy broke")', "spec: the policy broke; choosing the least" },
            { "return nil", "policy error: choose returned nil; choosing the least loaded" },
            { 'return { name = "chat9", host = "10.0.0.9", port = "1" }',
                "policy error: choose returned a server that is not live: chat9; choosing" },
            { "return 42", "policy error: choose returned 42; choosing" },
        } do
            assert(host.fs.write(path, "local M = {}\nfunction M.choose(servers, tie)\n    "
                .. case[1] .. "\nend\nreturn M\n"))
            -- until the reload the old policy answers, with the least loaded server too
            assert(util.wait_until(function()
                local rsp = pick()
                assert.same({ 0, "8091" }, { rsp.error, rsp.port })
                return status:log():find(case[2], 1, true)
            end, 5000, case[2]))
        end
        assert(host.fs.write(path, original))
        assert.is_nil(status:log():find("no live chat server", log_before + 1, true))
    end)

    it("answers Python grpcio clients", function()
        alive("chat1", 8090)
        local r = py.call(target, "StatusService.GetChatServer", { uid = 77 })
        assert.is_true(r.ok)
        assert.equal("8090", r.reply.port)
        local l = py.call(target, "StatusService.Login", { uid = 77, token = r.reply.token })
        assert.is_true(l.ok)
        assert.equal(0, l.reply.error)
    end)
end)

describe("status role's probes of the chat servers", function()
    -- A status role probing every 50 ms (copy_scripts: a private copy it may edit) and two
    -- chat servers in Redis. up: something accepts on its port (its gRPC address, which is
    -- what is probed); down: nothing listens there, and it has fewer users, so it is the
    -- policy's choice. -> status, pick() (the port chosen), listener (up's)
    local function with_up_and_down(copy_scripts, where)
        where = where or "127.0.0.1"
        local status = roles.start { role = "status", copy_scripts = copy_scripts,
            config = function(port)
                return { status = { port = port, admin_port = 0, servers_refresh_ms = 0,
                    probe_interval_ms = 50, probe_timeout_ms = 1000 } }
            end }
        local target = "127.0.0.1:" .. status.port
        local function pick()
            return assert(host.grpc.call(target, "StatusService.GetChatServer", { uid = 1001 })).port
        end
        redis.call("DEL", "chatservers", "logincount")
        local listener = assert(host.http.serve { address = "127.0.0.1:0", routes = {} })
        assert(redis.call("SET", "chatserver_up", host.json.encode({ host = "127.0.0.1",
            port = 7001, rpc = where .. ":" .. listener.port }), "EX", 30))
        assert(redis.call("SET", "chatserver_down", host.json.encode({ host = "127.0.0.1",
            port = 7002, rpc = where .. ":" .. roles.free_port() }), "EX", 30))
        assert(redis.call("SADD", "chatservers", "up", "down"))
        redis.call("HSET", "logincount", "up", 10, "down", 0)
        return status, pick, listener
    end

    local function clean_up(status)
        redis.call("DEL", "chatserver_up", "chatserver_down", "chatservers", "logincount")
        assert.equal(0, status:stop())
    end

    it("leaves out a server that does not accept connections, unless all fail", function()
        local status, pick, listener = with_up_and_down(false)
        -- (no first pick is asserted: a probe may already have left down out, it reads the
        -- view itself)
        assert(util.wait_until(function() return pick() == "7001" end, 5000, "the probe of down"))
        for _ = 1, 5 do assert.equal("7001", pick()) end
        assert.matches("chat server down does not accept connections", status:log())
        -- both fail now: the probes are what is wrong, so the policy chooses as without them
        listener:close()
        assert(util.wait_until(function() return pick() == "7002" end, 5000, "the fallback"))
        clean_up(status)
    end)

    it("probes a server announced by a host name as one announced by an address", function()
        local status, pick, listener = with_up_and_down(false, "localhost")
        assert(util.wait_until(function() return pick() == "7001" end, 5000, "the probe of down"))
        assert.matches("chat server down does not accept connections", status:log())
        listener:close()
        clean_up(status)
    end)

    it("still leaves out a server its probes found dead after a script reload", function()
        local status, pick, listener = with_up_and_down(true)
        assert(util.wait_until(function() return pick() == "7001" end, 5000, "the probe of down"))
        -- the new generation probes no more: only what the old one found can leave down out
        util.edit_file(status.scripts .. "/status/init.lua", "M%.probe = servers%.probe",
            "M.probe = function() end")
        assert(status:await("generation 2", 5000))
        for _ = 1, 5 do assert.equal("7001", pick()) end
        listener:close()
        clean_up(status)
    end)

    it("chooses by the policy alone when probe_interval_ms is 0", function()
        local status = roles.start { role = "status", config = function(port)
            return { status = { port = port, admin_port = 0, servers_refresh_ms = 0,
                probe_interval_ms = 0 } }
        end }
        local target = "127.0.0.1:" .. status.port
        redis.call("DEL", "chatservers", "logincount")
        local listener = assert(host.http.serve { address = "127.0.0.1:0", routes = {} })
        assert(redis.call("SET", "chatserver_up", host.json.encode({ host = "127.0.0.1",
            port = 7001, rpc = "127.0.0.1:" .. listener.port }), "EX", 30))
        assert(redis.call("SET", "chatserver_down", host.json.encode({ host = "127.0.0.1",
            port = 7002, rpc = "127.0.0.1:" .. roles.free_port() }), "EX", 30))
        assert(redis.call("SADD", "chatservers", "up", "down"))
        redis.call("HSET", "logincount", "up", 10, "down", 0)
        -- the probes of the test above left "down" out within 50 ms; none run here
        for _ = 1, 5 do
            assert.equal("7002", assert(host.grpc.call(target, "StatusService.GetChatServer",
                { uid = 1001 })).port)
            host.timer.sleep(100)
        end
        assert.is_nil(status:log():find("does not accept connections", 1, true))
        listener:close()
        redis.call("DEL", "chatserver_up", "chatserver_down", "chatservers", "logincount")
        assert.equal(0, status:stop())
    end)
end)

describe("status role's view of the chat servers", function()
    it("is refreshed again after a refresh raised an error", function()
        -- a copy of the scripts whose refresh raises while the key spec_fail_fetch exists
        local status = roles.start { role = "status", copy_scripts = true,
            edit = function(dir)
                util.edit_file(dir .. "/status/servers.lua", "(\nlocal function fetch%(%)\n)",
                    '%1    if host.redis.call("EXISTS", "spec_fail_fetch") == 1 then'
                    .. ' error("spec: fetch raised") end\n')
            end,
            config = function(port)
                return { status = { port = port, admin_port = 0, servers_refresh_ms = 0 } }
            end }
        local target = "127.0.0.1:" .. status.port
        local function pick()
            return host.grpc.call(target, "StatusService.GetChatServer", { uid = 1001 })
        end
        redis.call("DEL", "chatserver_chat1", "chatserver_chat2", "chatservers", "logincount")
        alive("chat1", 8090)
        assert.equal("8090", assert(pick()).port) -- the role has a view now
        assert(redis.call("SET", "spec_fail_fetch", 1))
        local rsp, err, code = pick()
        redis.call("DEL", "spec_fail_fetch")
        assert.is_nil(rsp)
        assert.equal(host.grpc.status.INTERNAL, code, err)
        redis.call("DEL", "chatserver_chat1", "chatservers")
        alive("chat2", 8091)
        assert.equal("8091", assert(pick()).port) -- not the view from before the error
        redis.call("DEL", "chatserver_chat2", "chatservers")
        assert.equal(0, status:stop())
    end)
end)

describe("role start-up and shutdown", function()
    it("shuts down cleanly on SIGTERM with calls in flight", function()
        local slow = roles.start { role = "status", copy_scripts = true,
            edit = function(dir)
                util.edit_file(dir .. "/status/init.lua",
                    '(M%["StatusService.Login"%] = function%(req%))',
                    '%1 host.log.info("login handler entered") host.timer.sleep(5000)')
            end,
            config = function(port) return { status = { port = port, admin_port = 0 } } end }
        local calls = {}
        for i = 1, 5 do
            calls[i] = host.spawn(host.grpc.call, "127.0.0.1:" .. slow.port, "StatusService.Login",
                { uid = i, token = "x" }, { timeout_ms = 20000 })
        end
        -- every call is inside its handler before the signal
        assert(util.wait_until(function()
            local _, n = slow:log():gsub("login handler entered", "")
            return n == 5
        end, 5000, "the 5 calls to reach their handler"))
        local t0 = host.timer.monotonic()
        assert(slow.proc:kill("TERM"))
        for i = 1, 5 do
            local ok, rsp, err, code = calls[i]:wait()
            assert.is_true(ok)
            assert.is_nil(rsp)
            assert.equal(host.grpc.status.UNAVAILABLE, code, err)
        end
        local status, sig = slow.proc:wait(10000)
        assert.same({ 0, 0 }, { status, sig })
        local log = slow:log() -- the whole log, read once the process has exited
        assert.truthy(host.timer.monotonic() - t0 < 3000) -- did not wait for the sleeping handlers
        assert.is_nil(log:find("assertion failed", 1, true))
        slow:stop()
    end)

    it("answers calls that arrive while it shuts down UNAVAILABLE, never UNIMPLEMENTED", function()
        local st = roles.start { role = "status", config = function(port)
            return { status = { port = port, admin_port = 0 } }
        end }
        local target = "127.0.0.1:" .. st.port
        -- 32 callers keep calls coming until the server is gone: some are matched by gRPC
        -- before the shutdown and reach the loop after it (a race: caught in most runs)
        local codes, stop = {}, false
        local callers = {}
        for i = 1, 32 do
            callers[i] = host.spawn(function()
                while not stop do
                    local _, _, code = host.grpc.call(target, "StatusService.Login",
                        { uid = 1001, token = "x" }, { timeout_ms = 2000 })
                    code = code or 0
                    codes[code] = (codes[code] or 0) + 1
                end
            end)
        end
        assert(util.wait_until(function() return (codes[0] or 0) >= 200 end, 5000, "calls answered"))
        assert(st.proc:kill("TERM"))
        local status = st.proc:wait(10000)
        stop = true
        for i = 1, 32 do assert.is_true((callers[i]:wait(5000))) end
        assert.equal(0, status)
        assert.is_nil(codes[host.grpc.status.UNIMPLEMENTED])
        assert.is_nil(st:log():find("looking up the handler", 1, true))
        st:stop()
    end)

    it("cuts a stop hook off after shutdown.grace_ms and exits", function()
        local hung = roles.start { role = "status", copy_scripts = true,
            edit = function(dir)
                util.edit_file(dir .. "/status/init.lua", '(local host = require "host"\n)', "%1"
                    .. 'host.on_stop(function() host.log.info("spec: stop hook entered")'
                    .. " host.timer.sleep(600000) end)\n")
            end,
            config = function(port)
                return { status = { port = port, admin_port = 0 }, shutdown = { grace_ms = 300 } }
            end }
        assert(hung.proc:kill("TERM"))
        assert(hung:await("spec: stop hook entered", 3000))
        -- the hook would sleep for 10 minutes: the process ends after grace_ms instead
        local status, sig = hung.proc:wait(5000)
        assert.same({ 0, 0 }, { status, sig })
        assert.matches("shutdown: stop hooks still running after 300 ms, going on", hung:log())
        hung:stop()
    end)

    it("exits 2 with one line when its gRPC port is taken; gRPC core's detail at debug, after it",
        function()
        local blocker = assert(host.grpc.serve { address = "127.0.0.1:0", handlers = {} })
        local dir = assert(host.fs.mkdtemp("status"))
        assert(host.fs.write(dir .. "/config.lua", "return " .. roles.serialize {
            scripts = { dir = host.root .. "/scripts" },
            status = { port = blocker.port, admin_port = 0 } }))
        local function run(level)
            return util.chathost({ "status", "-c", dir .. "/config.lua" },
                { timeout_ms = 10000, env = { CHATHOST_LOG_LEVEL = level } })
        end
        local r, d = run("info"), run("debug")
        blocker:close()
        host.fs.rmtree(dir)
        local line = ("chathost: cannot listen on 127.0.0.1:%d (address in use)\n")
            :format(blocker.port)
        assert.equal(2, r.code)
        assert.equal(line, r.stderr) -- nothing of gRPC core's nested error before (or after) it
        assert.equal(2, d.code)
        local at = d.stderr:find(line, 1, true)
        local detail = d.stderr:find("DEBUG status gRPC core: [^\n]*Address already in use")
        assert.truthy(at and detail and at < detail, d.stderr)
    end)
end)

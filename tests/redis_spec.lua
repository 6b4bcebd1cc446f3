-- host.redis against real servers. The shared private redis of tools/test.sh serves the
-- specs that leave it intact (through the default client, configured from the
-- environment); specs that kill, pause or password-protect a server start their own with
-- helpers.redis_server.
local host = require "host"
local rs = require "helpers.redis_server"
local util = require "helpers.util"

local redis = host.redis
local sleep = host.timer.sleep

local function new_key(name)
    return ("redis_spec:%s:%s"):format(name, host.crypto.random_hex(6))
end

-- Calls fn every 50 ms until it returns a truthy value, for at most 5 s.
local function eventually(fn, what)
    return util.wait_until(fn, 5000, what, 50)
end

-- Clients made by a test, closed after it whatever happens.
local clients = {}
local function client(opts)
    local c = redis.new(opts)
    clients[#clients + 1] = c
    return c
end
local function close_clients()
    for i = #clients, 1, -1 do
        clients[i]:close()
        clients[i] = nil
    end
end

describe("host.redis", function()
    describe("on the shared server (default client)", function()
        it("round-trips binary strings with NUL bytes", function()
            local k = new_key("binary")
            local data = "a\0b\r\n\255\0" .. string.rep("xyz", 1000) .. "\0"
            assert.equal("OK", redis.call("SET", k, data))
            assert.equal(data, redis.call("GET", k))
        end)

        it("returns integer replies as numbers", function()
            local k = new_key("incr")
            assert.equal(1, redis.call("INCR", k))
            assert.equal(11, redis.call("INCRBY", k, 10))
            assert.equal("number", type(redis.call("DEL", k)))
        end)

        it("returns nil, nil for a missing key", function()
            local n = select("#", redis.call("GET", new_key("missing")))
            local v, err = redis.call("GET", new_key("missing"))
            assert.is_nil(v)
            assert.is_nil(err)
            assert.equal(1, n)
        end)

        it("returns arrays as Lua arrays, with host.null for nil elements", function()
            local h, k = new_key("hash"), new_key("str")
            assert.equal(2, redis.call("HSET", h, "f1", "v1", "f2", "v2"))
            local flat = redis.call("HGETALL", h)
            assert.equal(4, #flat)
            local map = {}
            for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
            assert.same({ f1 = "v1", f2 = "v2" }, map)
            redis.call("SET", k, "x")
            assert.same({ "x", host.null, "x" }, redis.call("MGET", k, new_key("none"), k))
            assert.same({}, redis.call("LRANGE", new_key("nolist"), 0, -1))
        end)

        it("returns nil and the server's message for an error reply", function()
            local k = new_key("wrongtype")
            redis.call("SET", k, "a string")
            local v, err = redis.call("LPUSH", k, "x")
            assert.is_nil(v)
            assert.matches("^WRONGTYPE Operation against a key", err)
            v, err = redis.call("NOSUCHCOMMAND")
            assert.is_nil(v)
            assert.matches("^ERR unknown command", err)
        end)

        it("sends integral numbers as integers and others with full precision", function()
            local k = new_key("numbers")
            local cases = { { 1001, "1001" }, { 1e15, "1000000000000000" }, { -7, "-7" },
                { 0, "0" }, { 1.5, "1.5" }, { 2 ^ 53, "9007199254740992" },
                { 0.1, "0.10000000000000001" } }
            for _, case in ipairs(cases) do
                redis.call("SET", k, case[1])
                assert.equal(case[2], redis.call("GET", k))
            end
        end)

        it("runs a pipeline with mixed results", function()
            local s, list = new_key("pipe"), new_key("pipelist")
            local replies = redis.pipeline({
                { "SET", s, "v" },
                { "INCR", new_key("pipeincr") },
                { "GET", new_key("pipemissing") },
                { "LPUSH", s, "x" },
                { "RPUSH", list, "a", "b" },
                { "LRANGE", list, 0, -1 },
            })
            assert.equal(6, #replies)
            assert.equal("OK", replies[1])
            assert.equal(1, replies[2])
            assert.equal(host.null, replies[3])
            assert.equal("table", type(replies[4]))
            assert.matches("^WRONGTYPE", replies[4].err)
            assert.equal(2, replies[5])
            assert.same({ "a", "b" }, replies[6])
            assert.same({}, redis.pipeline({}))
        end)

        it("serves 1000 concurrent coroutines incrementing one key", function()
            local k = new_key("counter")
            local handles = {}
            for i = 1, 1000 do
                handles[i] = host.spawn(function() return redis.call("INCR", k) end)
            end
            local seen = {}
            for i = 1, 1000 do
                local ok, v, err = handles[i]:wait()
                assert.is_true(ok)
                assert.is_nil(err)
                assert.is_nil(seen[v], "reply " .. tostring(v) .. " seen twice")
                seen[v] = true
            end
            for v = 1, 1000 do assert.is_true(seen[v], "missing reply " .. v) end
            assert.equal("1000", redis.call("GET", k))
        end)

        it("raises on arguments that are not strings or numbers", function()
            local k = new_key("misuse")
            assert.has_error(function() redis.call("SET", k, {}) end,
                "expected a string or a number")
            assert.has_error(function() redis.call("SET", k, true) end)
            assert.has_error(function() redis.call("SET", k, nil, "x") end)
            assert.has_error(function() redis.call() end, "expected a command name")
            assert.has_error(function() redis.pipeline({ { "SET", k, {} } }) end, "command 1")
            assert.has_error(function() redis.pipeline({ "GET" }) end)
            assert.has_error(function() redis.pipeline("GET") end)
            assert.is_nil(redis.call("GET", k), "nothing was sent")
        end)

        it("raises on commands that would change one pooled connection", function()
            assert.has_error(function() redis.call("SUBSCRIBE", "ch") end, "not supported")
            assert.has_error(function() redis.call("select", 1) end, "not supported")
            assert.has_error(function() redis.pipeline({ { "MONITOR" } }) end, "not supported")
        end)

        it("reports stats", function()
            redis.call("PING")
            local s = redis.stats()
            assert.equal(host.config.redis.pool_size, s.pool_size)
            assert.is_true(s.connected >= 1)
            assert.is_true(s.commands >= 1)
            assert.equal(0, s.pending)
            for _, field in ipairs({ "timeouts", "reconnects", "errors" }) do
                assert.equal("number", type(s[field]))
            end
        end)
    end)

    describe("a client from host.redis.new", function()
        after_each(close_clients)

        it("defaults to the config's redis section", function()
            local c = client()
            local k = new_key("newclient")
            assert.equal("OK", c:call("SET", k, "from a client"))
            assert.equal("from a client", redis.call("GET", k))
            assert.same({ "PONG", "from a client" }, c:pipeline({ { "PING" }, { "GET", k } }))
            assert.equal(host.config.redis.pool_size, c:stats().pool_size)
        end)

        it("raises when used after close", function()
            local c = redis.new({ pool_size = 1 })
            assert.equal("PONG", c:call("PING"))
            c:close()
            c:close() -- twice is fine
            assert.has_error(function() c:call("PING") end, "redis client is closed")
            assert.has_error(function() c:pipeline({ { "PING" } }) end, "redis client is closed")
            assert.equal(0, c:stats().connected)
        end)

        it("answers calls waiting for the first connection when closed", function()
            local c = redis.new({ pool_size = 1 })
            local h = host.spawn(function() return c:call("PING") end)
            c:close()
            local ok, v, err = h:wait()
            assert.is_true(ok)
            assert.is_nil(v)
            assert.equal("redis client closed", err)
        end)

        it("can be closed by a task that one of its replies resumed", function()
            local c = redis.new({ pool_size = 1 })
            assert.equal("PONG", c:call("PING"))
            local k = new_key("closing")
            local handles = {}
            for i = 1, 20 do
                handles[i] = host.spawn(function()
                    local v, err = c:call("INCR", k)
                    if i == 5 then c:close() end
                    return v, err
                end)
            end
            for i = 1, 20 do
                local ok, v, err = handles[i]:wait()
                assert.is_true(ok)
                if i <= 5 then
                    assert.equal(i, v)
                else
                    assert.is_nil(v)
                    assert.equal("redis client closed", err)
                end
            end
        end)

        it("closes a client that is garbage collected without close()", function()
            local weak = setmetatable({}, { __mode = "v" })
            local function use_and_drop()
                local c = redis.new({ pool_size = 1 })
                weak[1] = c
                assert.equal("PONG", c:call("PING"))
            end
            use_and_drop()
            collectgarbage()
            collectgarbage()
            assert.is_nil(weak[1], "the client object was collected")
            -- and the harness finds no "redis client" left behind
        end)

        it("rejects bad options", function()
            assert.has_error(function() redis.new({ host = "redis.example.com" }) end, "IPv4")
            assert.has_error(function() redis.new({ port = 0 }) end, "port must be an integer in 1..65535")
            assert.has_error(function() redis.new({ pool_size = 1.5 }) end, "pool_size")
            assert.has_error(function() redis.new({ passwrd = "x" }) end,
                "unknown option 'passwrd'")
            assert.has_error(function() redis.new({ password = true }) end, "password")
            assert.has_error(function()
                redis.new({ reconnect_min_ms = 500, reconnect_max_ms = 100 })
            end, "reconnect_max_ms")
        end)

        it("accepts localhost", function()
            local c = client({ host = "localhost" })
            assert.equal("PONG", c:call("PING"))
        end)

        it("fails fast with the reason when nothing listens", function()
            local srv = rs.start()
            local port = srv.port
            srv:stop()
            local c = client({ port = port, reconnect_min_ms = 50 })
            local v, err = c:call("PING")
            assert.is_nil(v)
            assert.matches("^redis unavailable: .*refused", err)
            v, err = c:call("PING")
            assert.is_nil(v)
            assert.matches("^redis unavailable: .*refused", err)
            assert.is_true(c:stats().errors >= 1)
        end)
    end)

    describe("when the server dies", function()
        local srv
        setup(function() srv = rs.start() end)
        -- the restarted server is a process of the test itself: stop it before the leak check
        after_each(function()
            close_clients()
            srv:stop()
        end)

        it("fails promptly while it is down and reconnects once it is back", function()
            local c = client({ port = srv.port, reconnect_min_ms = 20, reconnect_max_ms = 200,
                command_timeout_ms = 5000 })
            assert.equal("OK", c:call("SET", "k", "before"))
            local in_flight = {}
            for i = 1, 100 do
                in_flight[i] = host.spawn(function()
                    if i % 10 == 0 then return c:pipeline({ { "INCR", "n" }, { "GET", "k" } }) end
                    return c:call("INCR", "n")
                end)
            end
            srv:kill()
            for _, h in ipairs(in_flight) do -- each answered, with a reply or an error
                local ok, v, err = h:wait()
                assert.is_true(ok)
                assert.truthy(v ~= nil or type(err) == "string")
            end
            local v, err = c:call("GET", "k")
            assert.is_nil(v)
            assert.equal("string", type(err))
            assert.not_equal("timeout", err) -- noticed the close, did not wait for the watchdog
            assert(eventually(function()
                local _, e = c:call("GET", "k")
                return e and e:find("^redis unavailable")
            end, "calls to fail fast"))
            srv:restart()
            assert(eventually(function() return c:call("PING") == "PONG" end, "a reconnect"))
            assert.is_nil(c:call("GET", "k"), "a fresh server without persistence")
            assert.is_true(c:stats().reconnects >= 1)
        end)
    end)

    describe("when the server is stopped (SIGSTOP)", function()
        local srv
        setup(function() srv = rs.start() end)
        teardown(function() srv:stop() end)
        after_each(function()
            srv:resume()
            close_clients()
        end)

        it("times out, keeps failing instead of hanging, and recovers after SIGCONT", function()
            local c = client({ port = srv.port, command_timeout_ms = 300, reconnect_min_ms = 20,
                reconnect_max_ms = 200 })
            assert.equal("PONG", c:call("PING"))
            srv:pause()
            local in_flight = {}
            for i = 1, 50 do
                in_flight[i] = host.spawn(function()
                    if i % 10 == 0 then return c:pipeline({ { "PING" }, { "GET", "k" } }) end
                    return c:call("INCR", "n")
                end)
            end
            local v, err = c:call("SET", "k", "v")
            assert.is_nil(v)
            assert.equal("timeout", err)
            for _, h in ipairs(in_flight) do
                assert.same({ true, nil, "timeout" }, { h:wait() })
            end
            -- reconnecting "succeeds" against a stopped server (the kernel accepts): the
            -- timeout must keep working on the new connections
            for _ = 1, 5 do
                local v2, err2 = c:call("GET", "k")
                assert.is_nil(v2)
                assert.equal("string", type(err2))
                sleep(100)
            end
            srv:resume()
            assert(eventually(function() return c:call("PING") == "PONG" end, "a reconnect"))
            assert.is_true(c:stats().timeouts >= 1)
        end)

        it("reads a reply that came while the loop was busy past the timeout before giving up",
        function()
            local c = client({ port = srv.port, command_timeout_ms = 300 })
            assert.equal("PONG", c:call("PING"))
            -- the server holds the reply 100 ms; meanwhile a task resumed by another reply
            -- (in the loop's poll phase, as a server's handlers run) keeps the loop busy for
            -- 1.5 s, so at the next iteration the reply waits unread in the socket past its
            -- deadline when the timers run
            local h = host.spawn(function()
                return c:call("EVAL", "local t = redis.call('TIME') local t0 = t[1] * 1e6 + t[2] "
                    .. "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - t0 > 100000 "
                    .. "return 'done'", 0)
            end)
            local busy = host.spawn(function()
                assert.equal("PONG", redis.call("PING")) -- the shared server: answers at once
                local t0 = host.timer.monotonic()
                while host.timer.monotonic() - t0 < 1500 do end
            end)
            assert.is_true((busy:wait()))
            assert.same({ true, "done" }, { h:wait() })
            assert.equal(0, c:stats().timeouts)
        end)

        it("drops the replies of cancelled calls", function()
            local core = require "chathost.harness_core" -- run(fn, ms): cancels fn's task at ms
            local k = new_key("cancel")
            local c = client({ port = srv.port, pool_size = 1, command_timeout_ms = 5000 })
            assert.equal("PONG", c:call("PING"))
            srv:pause()
            local ok, err = core.run(function() c:call("SET", k, "v") end, 100)
            assert.is_false(ok)
            assert.matches("^timeout", err)
            ok = core.run(function() c:pipeline({ { "INCR", k .. "n" }, { "GET", k } }) end, 100)
            assert.is_false(ok)
            -- a client still waiting for its first connection: the call is only held
            local fresh = client({ port = srv.port, command_timeout_ms = 5000 })
            ok = core.run(function() fresh:call("SET", k, "not sent") end, 100)
            assert.is_false(ok)
            srv:resume()
            -- the dropped replies do not shift the replies of later calls
            assert.equal("v", c:call("GET", k))
            assert.equal("v", fresh:call("GET", k))
            assert.equal(0, c:stats().pending)
            assert.equal(0, fresh:stats().pending)
        end)

        it("answers busy beyond max_pending", function()
            local c = client({ port = srv.port, max_pending = 1, command_timeout_ms = 300 })
            assert.equal("PONG", c:call("PING"))
            local v, err = c:pipeline({ { "PING" }, { "PING" } })
            assert.is_nil(v)
            assert.equal("busy", err)
            srv:pause()
            local first = host.spawn(function() return c:call("GET", "k") end)
            v, err = c:call("GET", "k")
            assert.is_nil(v)
            assert.equal("busy", err)
            local ok, v1, err1 = first:wait()
            assert.is_true(ok)
            assert.is_nil(v1)
            assert.equal("timeout", err1)
        end)

        it("ends the process promptly at shutdown with a command in flight", function()
            local fixture = host.root .. "/tests/fixtures/redis_shutdown_spec.lua"
            local r = util.chathost({ "test", fixture }, {
                env = { CHATHOST_REDIS_PORT = tostring(srv.port),
                    REDIS_SPEC_SERVER_PID = tostring(srv.pid) },
                timeout_ms = 8000,
            })
            -- the fixture ran its one test, which fails only for the coroutine it leaves
            assert.matches("a redis call in flight", r.stdout, r.stdout .. r.stderr)
            assert.matches("0 passed, 1 failed", r.stdout, r.stdout .. r.stderr)
            assert.matches("left behind 1 coroutine", r.stdout)
            assert.equal(1, r.code)
            assert.falsy(r.stderr:find("handles still open", 1, true), r.stderr)
            assert.falsy(r.stderr:find("Sanitizer", 1, true), r.stderr)
        end)
    end)

    describe("with a password and a db", function()
        local srv
        local PASSWORD = "s3cret-Pw"
        setup(function() srv = rs.start({ password = PASSWORD }) end)
        teardown(function() srv:stop() end)
        after_each(close_clients)

        it("authenticates and selects the db before a connection is used", function()
            local k = new_key("db3")
            local writer = client({ port = srv.port, password = PASSWORD, db = 3 })
            local reader = client({ port = srv.port, password = PASSWORD, db = 3 })
            local other = client({ port = srv.port, password = PASSWORD, db = 0 })
            assert.equal("OK", writer:call("SET", k, "in db 3"))
            assert.equal("in db 3", reader:call("GET", k))
            local v, err = other:call("GET", k)
            assert.is_nil(v)
            assert.is_nil(err)
        end)

        it("never succeeds with a wrong password or none", function()
            local wrong = client({ port = srv.port, password = "not-it", reconnect_min_ms = 20,
                reconnect_max_ms = 100 })
            local none = client({ port = srv.port, reconnect_min_ms = 20, reconnect_max_ms = 100 })
            for _ = 1, 5 do
                local v, err = wrong:call("PING")
                assert.is_nil(v)
                assert.matches("^redis unavailable: AUTH failed: WRONGPASS", err)
                assert.falsy(err:find("not-it", 1, true), "the password must not leak")
                v, err = none:call("PING")
                assert.is_nil(v)
                assert.matches("^redis unavailable: PING failed: NOAUTH", err)
                sleep(50)
            end
            assert.equal(0, wrong:stats().connected)
        end)
    end)
end)

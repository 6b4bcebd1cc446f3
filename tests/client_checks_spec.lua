-- The terminal client's pieces on their own (scripts/client, issue 6): the field checks of
-- the original Qt client's dialogs with their English messages, the error sentences,
-- and the HTTP manager (ReqId routes, obfuscated passwords, retries with backoff) against
-- a fake gate served by the spec.
local host = require "host"
local system = require "helpers.client_system"
local tls = require "helpers.tls"
local util = require "helpers.util"

local password = dofile(host.root .. "/scripts/lib/password.lua")

describe("client field checks", function()
    local loader, checks

    setup(function()
        local handlers
        loader, handlers = system.load_client()
        checks = handlers.checks
    end)

    teardown(function() loader:close() end)

    local function message(ok, msg) return ok and "ok" or msg end

    it("asks for a user name of letters and digits that the gate accepts", function()
        assert.equal("User name is empty", message(checks.user("")))
        assert.equal("User name is empty", message(checks.user("   ")))
        local chars = "User name may contain only letters and digits"
        assert.equal(chars, message(checks.user("al ice")))
        assert.equal(chars, message(checks.user("al_ice")))
        assert.equal("User name must be 3 to 20 characters and not only digits",
            message(checks.user("al")))
        assert.equal("User name must be 3 to 20 characters and not only digits",
            message(checks.user("12345")))
        assert.equal("User name must be 3 to 20 characters and not only digits",
            message(checks.user(("a"):rep(21))))
        assert.equal("ok", message(checks.user("alice2")))
    end)

    it("checks e-mail addresses with the original's pattern and the gate's shape", function()
        for _, good in ipairs({ "alice@example.com", "a.b@example.co.uk", "a_b@x.io",
            "Bob.Smith@Mail.Example.org" }) do
            assert.equal("ok", message(checks.email(good)), good)
        end
        for _, bad in ipairs({ "alice", "alice@", "@example.com", "alice@example",
            "alice@@example.com", "al ice@example.com", "alice@.com" }) do
            assert.equal("E-mail address is not valid", message(checks.email(bad)), bad)
        end
        assert.equal("E-mail address is empty", message(checks.email("")))
        -- login only needs something (the gate answers 1009 for anything unknown)
        assert.equal("ok", message(checks.login_email("whatever")))
        assert.equal("E-mail address is empty", message(checks.login_email(" ")))
    end)

    it("takes 6 to 15 characters of letters, digits and !@#$%^&*. as a password", function()
        local msg = "Password must be 6 to 15 characters of letters, digits and !@#$%^&*."
        for _, good in ipairs({ "abc123", "A1!@#$", "%^&*.zZ9", ("x"):rep(15) }) do
            assert.equal("ok", message(checks.password(good)), good)
        end
        for _, bad in ipairs({ "", "abc12", ("x"):rep(16), "abc 123", "abc-123", "pässwörd" }) do
            assert.equal(msg, message(checks.password(bad)), bad)
        end
        assert.equal("Passwords do not match", message(checks.confirm("abc123", "abc124")))
        assert.equal("ok", message(checks.confirm("abc123", "abc123")))
        assert.equal("Verification code is empty", message(checks.code("")))
    end)

    it("reports the first failing field of a form, in the dialog's order", function()
        local ok, msg, field = checks.register { user = "", email = "bad", password = "x",
            code = "" }
        assert.is_nil(ok)
        assert.same({ "User name is empty", "user" }, { msg, field })
        ok, msg, field = checks.register { user = "alice", email = "a@example.com",
            password = "abc123", confirm = "abc124", code = "123456" }
        assert.same({ "Passwords do not match", "confirm" }, { msg, field })
        ok, msg, field = checks.register { user = "alice", email = "a@example.com",
            password = "abc123", code = "" }
        assert.same({ "Verification code is empty", "code" }, { msg, field })
        assert.is_true(checks.register { user = "alice", email = "a@example.com",
            password = "abc123", code = "123456" })
        ok, msg, field = checks.reset { user = "alice", email = "a@example.com", password = "abc" }
        assert.same({ "Password must be 6 to 15 characters of letters, digits and !@#$%^&*.",
            "password" }, { msg, field })
        ok, msg, field = checks.login { email = "", password = "abc123" }
        assert.same({ "E-mail address is empty", "email" }, { msg, field })
    end)
end)

describe("client error sentences", function()
    local loader, sentences

    setup(function()
        local handlers
        loader, handlers = system.load_client()
        sentences = handlers.sentences
    end)

    teardown(function() loader:close() end)

    it("has a sentence for every error code of the protocol", function()
        for code = 1001, 1019 do
            local s = sentences.of(code, {})
            assert.truthy(#s > 10, code)
            assert.is_nil(s:find("%d%d%d%d"), s) -- words, not the number
        end
        assert.equal("Wrong e-mail or password", sentences.of(1009))
        assert.equal("The verification code is wrong", sentences.of(1004))
    end)

    it("fills in how long to wait and which field was wrong", function()
        assert.equal("Too many attempts; try again in 42 seconds",
            sentences.of(1017, { error = 1017, retry_after = 42 }))
        assert.equal("Too many attempts; try again in 2 seconds",
            sentences.of(1017, { retry_after = 1.2 }))
        assert.equal("Too many attempts; try again later", sentences.of(1017, {}))
        assert.equal("Invalid e-mail address", sentences.of(1016, { field = "email" }))
        assert.equal("Invalid message text", sentences.of(1016, { field = "content" }))
        assert.equal("Invalid request", sentences.of(1016, {}))
        assert.equal("The server answered with error 4242", sentences.of(4242))
    end)

    it("has a sentence for every resource code (1100-1108)", function()
        for code = 1100, 1108 do
            local s = sentences.of(code, {})
            assert.truthy(#s > 10, code)
            assert.is_nil(s:find("error"), s) -- a sentence, not "the server answered with error"
        end
        assert.equal("That image is not in a chat of yours", sentences.of(1106))
    end)

    it("says what went wrong on the network", function()
        assert.equal("Cannot reach the gate (connection refused)",
            sentences.network("gate", "connection refused"))
        assert.equal("The gate did not answer in time", sentences.network("gate", "timeout"))
    end)
end)

describe("client HTTP manager", function()
    local loader, handlers, server, calls, answers

    setup(function()
        loader, handlers = system.load_client()
        local function route(path)
            return function(req)
                calls[#calls + 1] = { path = path, body = req.json,
                    type = req.headers["content-type"] }
                local answer = table.remove(answers, 1) or { error = 0 }
                if type(answer) == "function" then return answer(req) end
                return answer
            end
        end
        server = assert(host.http.serve { address = "127.0.0.1:0", name = "fake_gate",
            access_log = false, routes = {
                ["POST /get_varifycode"] = route("/get_varifycode"),
                ["POST /user_register"] = route("/user_register"),
                ["POST /reset_pwd"] = route("/reset_pwd"),
                ["POST /user_login"] = route("/user_login"),
            } })
    end)

    teardown(function()
        server:close()
        loader:close()
    end)

    before_each(function() calls, answers = {}, {} end)

    local function client(opts)
        opts = opts or {}
        opts.gate = opts.gate or ("http://127.0.0.1:" .. server.port .. "/")
        opts.retry_min_ms, opts.retry_max_ms = 5, 20
        return handlers.api.new(opts)
    end

    it("tags each request with a ReqId and a module, routed by a ReqId -> handler map", function()
        local mgr = handlers.http_mgr
        assert.same({ GET_VARIFY_CODE = 1001, REG_USER = 1002, RESET_PWD = 1003,
            LOGIN_USER = 1004 }, mgr.ReqId)
        for id = 1001, 1004 do assert.equal("function", type(mgr.handlers[id])) end
        local c = client()
        answers = { { error = 0, email = "a@example.com" } }
        assert.same({ email = "a@example.com" }, c:get_code("a@example.com"))
        assert.equal("/get_varifycode", calls[1].path)
        assert.equal("application/json", calls[1].type)
    end)

    it("sends passwords obfuscated as the original client does, never in clear", function()
        local c = client()
        answers = { { error = 0, uid = 1001, user = "alice", email = "a@example.com" } }
        local reg = assert(c:register { user = "alice", email = "a@example.com",
            password = "Passw0rd!", code = " 123456 " })
        assert.equal(1001, reg.uid)
        local body = calls[1].body
        assert.equal("Yhzz~9{m(", body.passwd)
        assert.equal("Yhzz~9{m(", body.confirm)
        assert.equal("123456", body.varifycode)
        assert.equal("alice", body.nick)
        assert.equal(0, body.sex)
        assert.matches("^:/res/head_[1-5]%.jpg$", body.icon)
        answers = { { error = 0, user = "alice", email = "a@example.com" } }
        assert(c:reset { user = "alice", email = "a@example.com", password = "abc123",
            code = "1" })
        assert.same({ user = "alice", email = "a@example.com", passwd = password.xor("abc123"),
            varifycode = "1" }, calls[2].body)
    end)

    it("checks the fields before anything is sent", function()
        local c = client()
        local r, err, code = c:register { user = "alice", email = "nope", password = "abc123",
            code = "1" }
        assert.is_nil(r)
        assert.same({ "E-mail address is not valid", "invalid" }, { err, code })
        r, err, code = c:login("a@example.com", "abc")
        assert.same({ "Password must be 6 to 15 characters of letters, digits and !@#$%^&*.",
            "invalid" }, { err, code })
        assert.equal(0, #calls)
    end)

    it("turns each gate error into its sentence", function()
        local c = client()
        answers = { { error = 1017, retry_after = 30 } }
        local r, err, code = c:login("a@example.com", "abc123")
        assert.is_nil(r)
        assert.equal(1017, code)
        assert.equal("Too many attempts; try again in 30 seconds", err)
        answers = { { error = 1004 } }
        r, err, code = c:register { user = "alice", email = "a@example.com", password = "abc123",
            code = "1" }
        assert.same({ "The verification code is wrong", 1004 }, { err, code })
        answers = { function() return 200, { ["Content-Type"] = "text/plain" }, "hello" end }
        r, err, code = c:get_code("a@example.com")
        assert.same({ "The server's reply could not be read", "reply" }, { err, code })
    end)

    it("asks again, with backoff, when a login finds a server briefly unavailable", function()
        local c = client()
        answers = { { error = 1002 }, { error = 1018 }, { error = 1009 } }
        local t0 = host.timer.monotonic()
        local r, err, code = c:login("a@example.com", "abc123")
        assert.is_nil(r)
        assert.same({ "Wrong e-mail or password", 1009 }, { err, code })
        assert.equal(3, #calls)
        assert.truthy(host.timer.monotonic() - t0 >= 5)
        -- but a registration is not sent twice after an error answer
        answers = { { error = 1002 } }
        calls = {}
        r, err, code = c:register { user = "alice", email = "a@example.com", password = "abc123",
            code = "1" }
        assert.equal(1002, code)
        assert.equal(1, #calls)
    end)

    it("gives up on an unreachable gate after a bounded number of tries", function()
        local c = client { gate = "http://127.0.0.1:1", retry_attempts = 3 }
        local t0 = host.timer.monotonic()
        local r, err, code = c:login("a@example.com", "abc123")
        assert.is_nil(r)
        assert.equal("network", code)
        assert.equal("Cannot reach the gate at http://127.0.0.1:1 (connection refused)", err)
        assert.truthy(host.timer.monotonic() - t0 < 1000)
    end)

    it("does not send a registration again after a timeout (it may have arrived)", function()
        local c = client { http_timeout_ms = 100 }
        answers = { function() host.timer.sleep(300) return { error = 0, uid = 5 } end }
        local r, err, code = c:register { user = "alice", email = "a@example.com",
            password = "abc123", code = "1" }
        assert.is_nil(r)
        assert.same({ "The gate at http://127.0.0.1:" .. server.port .. " did not answer in time",
            "network" }, { err, code })
        host.timer.sleep(350)
        assert.equal(1, #calls)
    end)

    describe("over https", function()
        local dir, ca, relay, gate

        setup(function()
            dir = assert(host.fs.mkdtemp("client_tls"))
            ca = tls.ca(dir, "ca")
            relay = tls.relay(tls.cert(dir, ca, "gate"), server.port)
            gate = "https://127.0.0.1:" .. relay.port
        end)

        teardown(function()
            relay.stop()
            host.fs.rmtree(dir)
        end)

        it("talks to a gate whose certificate the ca_file's CA signed", function()
            local c = client { gate = gate, ca_file = ca.pem }
            answers = { { error = 0, email = "a@example.com" } }
            assert.same({ email = "a@example.com" }, c:get_code("a@example.com"))
            assert.equal("/get_varifycode", calls[1].path)
        end)

        it("reports a certificate it cannot trust at once, without asking again", function()
            local sleeps = 0
            local mgr = handlers.http_mgr.new { gate = gate, timeout_ms = 2000, attempts = 3,
                retry_min_ms = 5, retry_max_ms = 20,
                sleep = function() sleeps = sleeps + 1 return true end }
            local r, err, code = mgr:post(mgr.ReqId.LOGIN_USER, mgr.Modules.LOGIN,
                { email = "a@example.com", passwd = "x" })
            assert.is_nil(r)
            assert.equal("network", code)
            assert.matches("^Cannot reach the gate at https://127%.0%.0%.1:%d+ %(tls: certificate "
                .. "problem: ", err)
            assert.equal(0, sleeps)
            assert.equal(0, #calls)
        end)
    end)
end)

describe("client chat connection", function()
    local loader, api, gate, chat, logins, heartbeats, mode
    local open = {}

    setup(function()
        local handlers
        loader, handlers = system.load_client()
        api = handlers.api
        chat = assert(host.chat.serve { address = "127.0.0.1:0", name = "fake_chat",
            handlers = function() return {
                messages = {
                    [1005] = function(session, msg)
                        session:bind(msg.uid)
                        return { error = 0, uid = msg.uid, name = "me", token = msg.token,
                            friend_list = { { uid = 7, name = "seven" } }, apply_list = {} }
                    end,
                    [1023] = function(session, msg)
                        heartbeats[#heartbeats + 1] = msg.fromuid
                        if mode == "silent" then return nil end
                        return { error = 0 }
                    end,
                    [1007] = function(session, msg)
                        if mode == "busy" then
                            mode = nil
                            return { error = 1018 }
                        end
                        if msg.uid == "slow" then host.timer.sleep(300) end
                        return { error = 0, uid = 7, name = msg.uid }
                    end,
                    [1099] = function(session) -- makes the server push something new
                        session:send(4242, { hello = true })
                        return { error = 0 }
                    end,
                },
            } end })
        gate = assert(host.http.serve { address = "127.0.0.1:0", name = "fake_gate2",
            access_log = false, routes = {
                ["POST /user_login"] = function()
                    logins = logins + 1
                    -- tls: the "chat server" is this HTTP server, which answers a TLS
                    -- hello in plain at once (the chat frames would wait for more bytes
                    -- or not, by the hello's random bytes: a handshake timeout, retried)
                    local port = tostring(mode == "tls" and gate.port or chat.port)
                    return { error = 0, uid = 1234, email = "a@example.com", token = "t",
                        host = "127.0.0.1", port = port, chathost = "127.0.0.1", chatport = port,
                        tls = mode == "tls" or nil }
                end,
            } })
    end)

    teardown(function()
        gate:close()
        chat:close()
        loader:close()
    end)

    before_each(function() logins, heartbeats, mode = 0, {}, nil end)

    after_each(function()
        for _, c in ipairs(open) do c:close() end
        open = {}
    end)

    local function client(opts)
        opts = opts or {}
        opts.gate = "http://127.0.0.1:" .. gate.port
        opts.retry_min_ms, opts.retry_max_ms = 5, 20
        local c = api.new(opts)
        open[#open + 1] = c
        assert(c:login("a@example.com", "abc123"))
        return c
    end

    it("logs in with the gate's token on the chat server it names", function()
        local c = client()
        assert.equal(1, logins)
        assert.equal(1234, c.me.uid)
        assert.equal("127.0.0.1:" .. chat.port, c.server)
        assert.same({ 7 }, { c:friends()[1].uid })
    end)

    it("sends a heartbeat (1023 with its uid) every heartbeat_ms", function()
        local t0 = host.timer.monotonic()
        client { heartbeat_ms = 40 }
        assert(util.wait_until(function() return #heartbeats >= 3 end, 5000, "3 heartbeats"))
        -- paced, not flooding: a slow machine delays beats, it cannot bring more of them
        local most = math.floor((host.timer.monotonic() - t0) / 40) + 1
        assert.truthy(#heartbeats <= most, #heartbeats .. " heartbeats, at most " .. most)
        for _, uid in ipairs(heartbeats) do assert.equal(1234, uid) end
    end)

    it("takes a heartbeat without answer for a lost connection and logs in again", function()
        local c = client { heartbeat_ms = 50 }
        mode = "silent"
        local ev = assert(c:next_event(1000))
        assert.equal("disconnected", ev.kind)
        assert.equal("no heartbeat reply", ev.reason)
        mode = nil
        ev = assert(c:next_event(2000))
        assert.equal("reconnected", ev.kind)
        assert.equal(2, logins)
        assert.equal("seven", assert(c:search("seven")).name)
    end)

    it("speaks TLS to the chat server when the gate says tls, and does not retry a TLS failure",
        function()
        mode = "tls" -- and the server it names speaks no TLS
        local c = api.new { gate = "http://127.0.0.1:" .. gate.port, retry_min_ms = 5,
            retry_max_ms = 20, connect_timeout_ms = 2000 }
        open[#open + 1] = c
        local me, err, code = c:login("a@example.com", "abc123")
        assert.is_nil(me)
        assert.equal("network", code)
        assert.matches("%(tls: ", err)
        assert.equal(1, logins)
    end)

    it("asks a busy server again", function()
        local c = client()
        mode = "busy"
        assert.equal("again", assert(c:search("again")).name)
        assert.is_nil(mode)
    end)

    it("matches replies to requests in order, also when one is still running", function()
        local c = client()
        local slow = host.spawn(function() return c:search("slow") end)
        local fast = assert(c:search("fast"))
        assert.equal("fast", fast.name)
        local ok, r = slow:wait(2000)
        assert.is_true(ok)
        assert.equal("slow", r.name)
    end)

    it("passes a push it does not know on as an event", function()
        local c = client()
        assert(c:chat_request(1099, {}))
        local ev = assert(c:next_event(1000))
        assert.same({ kind = "push", id = 4242, body = { hello = true }, at = ev.at }, ev)
    end)
end)

describe("client md5", function()
    local md5 = dofile(host.root .. "/scripts/client/md5.lua")

    it("gives RFC 1321's digests, across the 55/56/64-byte padding edges", function()
        assert.equal("d41d8cd98f00b204e9800998ecf8427e", md5.hex(""))
        assert.equal("0cc175b9c0f1b6a831c399e269772661", md5.hex("a"))
        assert.equal("900150983cd24fb0d6963f7d28e17f72", md5.hex("abc"))
        assert.equal("f96b697d7cb7938d525a2f31aaf161d0", md5.hex("message digest"))
        assert.equal("c3fcd3d76192e4007dfb496cca67e13b", md5.hex("abcdefghijklmnopqrstuvwxyz"))
        assert.equal("57edf4a22be3c955ac49da2e2107b67a", md5.hex(("1234567890"):rep(8)))
        assert.equal("ef1772b6dff9a122358552954ad0df65", md5.hex(("a"):rep(55)))
        assert.equal("3b0c8ac703f828b04c6c197006d17218", md5.hex(("a"):rep(56)))
        assert.equal("014842d480b571495a4a0363793f7367", md5.hex(("a"):rep(64)))
    end)
end)

-- The gate role (docs/protocol.md §3): code requests, registration, password reset and
-- login over real HTTP, against real verify and status roles, an SMTP sink, Redis and
-- MariaDB. Each test uses accounts of its own; codes are read from the sink in the full
-- flow and written to code_<email> (as the verify role does) elsewhere.
local host = require "host"
local roles = require "helpers.roles"
local smtp_sink = require "helpers.smtp_sink"
local http = require "helpers.http"
local util = require "helpers.util"
local redis, db = host.redis, host.db

local password = dofile(host.root .. "/scripts/lib/password.lua")
local obf = password.xor -- what the Qt client does to a password before sending it

local PEER = "127.0.0.1"
local RPC_TIMEOUT_MS = 500 -- the deadline of the gate whose peers are down

-- The status role's scripts with a GetChatServer that answers too late for any deadline.
local HUNG_STATUS = [[
local host = require "host"
return {
    ["StatusService.GetChatServer"] = function()
        host.timer.sleep(2000)
        return { error = 0 }
    end,
}
]]

describe("lib.password", function()
    it("reverses the client's obfuscation (the reference's test vectors)", function()
        assert.equal("gde745", obf("abc123"))
        assert.equal("Yhzz~9{m(", obf("Passw0rd!"))
        assert.equal("gdebc`", obf("abcdef"))
        assert.equal("nmlkjihgfedcba`", obf("abcdefghijklmno"))
        assert.equal("abc123", password.clear("gde745"))
        assert.equal("Passw0rd!", password.clear("Yhzz~9{m("))
    end)

    it("counts UTF-16 code units and round-trips text beyond ASCII", function()
        for _, s in ipairs({ "pässwörd", "密码😀x", "😀😀😀" }) do
            assert.equal(s, obf(obf(s)))
        end
        assert.equal("è", obf("é")) -- U+00E9 xor 1
        -- an astral character is two units (D83D DE00 for U+1F600): key 2, giving U+1FE02
        assert.equal("\240\159\184\130", obf("😀"))
        assert.is_nil(obf("\255abc"))
        assert.is_nil(obf("\237\160\128")) -- an encoded surrogate is not UTF-8
    end)

    it("accepts 6..15 characters of [a-zA-Z0-9!@#$%^&*.] only", function()
        for _, ok in ipairs({ "abc123", "A1!@#$", "%^&*.zZ9", ("x"):rep(15) }) do
            assert.equal(ok, password.clear(obf(ok)))
        end
        local refused = { "abc12", ("x"):rep(16), "abc 123", "abc-123", "pässwörd", "abc123\n" }
        for _, bad in ipairs(refused) do
            assert.is_nil(password.clear(obf(bad)))
        end
        assert.is_nil(password.clear(("a"):rep(100)))
    end)
end)

describe("gate role", function()
    local sink, verify, status, gate, down, hung
    local gate_admin -- the gate's admin port (/metrics)
    local chat_name = "gatespec" .. host.crypto.random_hex(3)
    local n = 0

    setup(function()
        sink = smtp_sink.start()
        verify = roles.start { role = "verify", config = function(port)
            return { verify = { port = port, admin_port = 0 },
                mail = { url = "smtp://127.0.0.1:" .. sink.port } }
        end }
        status = roles.start { role = "status", config = function(port)
            return { status = { port = port, admin_port = 0, servers_refresh_ms = 0 } }
        end }
        gate = roles.start { role = "gate", copy_scripts = true, config = function(port)
            gate_admin = roles.free_port()
            return { gate = { port = port, admin_port = gate_admin },
                verify = { port = verify.port }, status = { port = status.port },
                resource = { public_host = "res.example", port = 19093 } }
        end }
        -- a gate whose verify target refuses connections and whose status role hangs
        hung = roles.start { role = "status", copy_scripts = true, config = function(port)
            return { status = { port = port, admin_port = 0 } }
        end, edit = function(dir)
            util.write_tree(dir, { ["status/init.lua"] = HUNG_STATUS })
        end }
        down = roles.start { role = "gate", config = function(port)
            return { gate = { port = port, admin_port = 0, accounts = {
                verify_target = "127.0.0.1:" .. roles.free_port(),
                status_target = "127.0.0.1:" .. hung.port,
                rpc_timeout_ms = RPC_TIMEOUT_MS } } }
        end }
        -- the one live chat server the status role knows (it has no configured instances)
        redis.call("DEL", "chatservers")
        assert(redis.call("SET", "chatserver_" .. chat_name,
            host.json.encode({ host = "127.0.0.1", port = 18090 }), "EX", 600))
        assert(redis.call("SADD", "chatservers", chat_name))
    end)

    teardown(function()
        redis.call("SREM", "chatservers", chat_name)
        redis.call("DEL", "chatserver_" .. chat_name)
        assert.equal(0, down:stop())
        assert.equal(0, gate:stop())
        assert.equal(0, status:stop())
        assert.equal(0, verify:stop())
        assert.equal(0, hung:stop())
        sink:stop()
    end)

    before_each(function()
        redis.call("DEL", "rate:code_ip:" .. PEER, "rate:login_ip:" .. PEER,
            "rate:hash_ip:" .. PEER)
    end)

    local function fresh()
        n = n + 1
        local id = host.crypto.random_hex(4)
        return { user = ("gs%d_%s"):format(n, id), email = ("gs%d.%s@example.com"):format(n, id) }
    end

    -- POST path with body (a table, or raw text) to the gate; the decoded JSON reply.
    local function call(path, body, port)
        local res = assert(http.post(port or gate.port, path, body))
        assert.equal(200, res.status)
        assert.equal("application/json", res.headers["content-type"])
        return assert(res.json, res.body)
    end

    -- Stores a code for email as the verify role would; returns it.
    local function give_code(email)
        local code = ("%06d"):format(host.crypto.random_uniform(1000000))
        assert(redis.call("SET", "code_" .. email, code, "EX", 600))
        return code
    end

    local function wrong(code) return ("%06d"):format((tonumber(code) + 1) % 1000000) end

    local function register_body(acc, code, clear)
        clear = clear or "abc123"
        return { user = acc.user, email = acc.email, passwd = obf(clear), confirm = obf(clear),
            varifycode = code, sex = 0, nick = acc.user, icon = ":/res/head_1.jpg" }
    end

    local function register(acc, clear)
        local rsp = call("/user_register", register_body(acc, give_code(acc.email), clear))
        assert.equal(0, rsp.error)
        return rsp.uid
    end

    local function login(email, clear, port)
        return call("/user_login", { email = email, passwd = obf(clear) }, port)
    end

    local function exists(key) return redis.call("EXISTS", key) == 1 end

    -- A counter of the gate's /metrics (only this spec's requests reach that gate).
    local function metric(name)
        local res = assert(http.get(gate_admin, "/metrics"))
        return assert(tonumber(res.body:match("\n" .. name .. " ([%d%.e%+%-]+)")), res.body)
    end

    describe("full flow", function()
        it("mails a code, registers with it, and logs in to a chat server with a token", function()
            local acc = fresh()
            local typed = acc.email:upper()
            assert.same({ error = 0, email = acc.email },
                call("/get_varifycode", { email = typed }))
            local mail = assert(sink:wait_for(function(m)
                return m.headers["x-rcptto"] == acc.email
            end))
            local code = assert(mail.body:match("code is (%d%d%d%d%d%d)"))

            local body = register_body(acc, code)
            body.email = typed
            body.client_build = { qt = "5.15" } -- fields the gate does not know are ignored
            local reg = call("/user_register", body)
            assert.same({ error = 0, uid = reg.uid, user = acc.user, email = acc.email }, reg)
            assert.truthy(reg.uid >= 1001)
            assert.is_false(exists("code_" .. acc.email))

            local rsp = login(typed, "abc123")
            assert.same({ error = 0, uid = reg.uid, email = acc.email, token = rsp.token,
                host = "127.0.0.1", port = "18090", chathost = "127.0.0.1", chatport = "18090",
                reshost = "res.example", resport = "19093" }, -- strings, as the S2 client reads them
                rsp)
            assert.equal(rsp.token, redis.call("GET", "utoken_" .. reg.uid))
            assert.truthy(redis.call("TTL", "utoken_" .. reg.uid) > 0)
            -- one line per outcome, without secrets
            local log = gate:log()
            assert.truthy(log:find("user_login: 0 logged in uid=" .. reg.uid, 1, true), log)
            for _, secret in ipairs({ code, "abc123", obf("abc123"), rsp.token }) do
                assert.is_nil(log:find(secret, 1, true))
            end
        end)
    end)

    describe("POST /get_varifycode", function()
        it("answers 1001 when the body is not a JSON object or email is not a string", function()
            local bodies = { "{", "", "[1, 2]", '"x"', "null", { email = 5 },
                { email = { a = 1 } } }
            for _, body in ipairs(bodies) do
                assert.equal(1001, call("/get_varifycode", body).error)
            end
        end)

        it("answers 1016 naming email when it is missing or malformed", function()
            for _, body in ipairs({ {}, { email = "" }, { email = "no-at-sign" }, { email = "a@b" },
                { other = "x@example.com" } }) do
                assert.same({ error = 1016, field = "email" }, call("/get_varifycode", body))
            end
        end)

        it("answers 1017 with retry_after to a second request within a minute", function()
            local acc = fresh()
            assert.equal(0, call("/get_varifycode", { email = acc.email }).error)
            local rsp = call("/get_varifycode", { email = acc.email })
            assert.equal(1017, rsp.error)
            assert.truthy(rsp.retry_after > 0 and rsp.retry_after <= 60)
        end)

        it("answers 1017 once the client IP has asked 20 times in an hour", function()
            assert(redis.call("SET", "rate:code_ip:" .. PEER, 19, "EX", 3600))
            assert.equal(0, call("/get_varifycode", { email = fresh().email }).error)
            local rsp = call("/get_varifycode", { email = fresh().email })
            assert.equal(1017, rsp.error)
            assert.truthy(rsp.retry_after > 3500 and rsp.retry_after <= 3600)
        end)

        it("answers 1002 within the deadline when the verify role is unreachable", function()
            local t0 = host.timer.monotonic()
            assert.same({ error = 1002 },
                call("/get_varifycode", { email = fresh().email }, down.port))
            assert.truthy(host.timer.monotonic() - t0 < RPC_TIMEOUT_MS + 1000)
        end)
    end)

    describe("POST /user_register", function()
        it("stores only an argon2id hash of the clear password", function()
            local acc = fresh()
            local uid = register(acc, "Passw0rd!")
            local rows = assert(db.query(
                "SELECT name, email, pwd_hash, nick, icon, sex FROM user WHERE uid = ?", uid))
            local row = rows[1]
            assert.matches("^%$argon2id%$v=19%$m=19456,t=2,p=1%$", row.pwd_hash)
            assert.is_true(host.crypto.verify_password(row.pwd_hash, "Passw0rd!"))
            assert.same({ acc.user, acc.email, acc.user, ":/res/head_1.jpg", 0 },
                { row.name, row.email, row.nick, row.icon, row.sex })
        end)

        it("answers 1001 for a body that is not an object or a field of the wrong type", function()
            for _, body in ipairs({ "{", "[1]", '"x"' }) do
                assert.equal(1001, call("/user_register", body).error)
            end
            for field, v in pairs({ user = 5, email = {}, passwd = 123456, confirm = true,
                varifycode = 123456, sex = "0", nick = 1, icon = {} }) do
                local body = register_body(fresh(), "123456")
                body[field] = v
                assert.same({ error = 1001, field = field }, call("/user_register", body))
            end
        end)

        it("answers 1016 naming the first missing or invalid field", function()
            local cases = {
                { "user", nil }, { "user", "ab" }, { "user", "a b c" }, { "user", "12345" },
                { "user", ("x"):rep(21) }, { "email", nil }, { "email", "x@y" },
                { "passwd", nil }, { "passwd", obf("abc12") }, { "passwd", obf("abc 123") },
                { "confirm", nil }, { "varifycode", nil }, { "varifycode", "12ab56" },
                { "nick", ("x"):rep(65) }, { "sex", 7 },
            }
            for _, c in ipairs(cases) do
                local body = register_body(fresh(), "123456")
                body[c[1]] = c[2]
                assert.same({ error = 1016, field = c[1] }, call("/user_register", body))
            end
            -- several bad fields: the first in the route's order is named
            assert.same({ error = 1016, field = "email" }, call("/user_register",
                { email = "bad", user = "fine_name", passwd = "x" }))
        end)

        it("answers 1006 when confirm differs from passwd, before looking at the code", function()
            local body = register_body(fresh(), "123456")
            body.confirm = obf("abc124")
            assert.same({ error = 1006 }, call("/user_register", body))
        end)

        it("answers 1003 when no code was sent or the code expired", function()
            local acc = fresh()
            assert.same({ error = 1003 }, call("/user_register", register_body(acc, "123456")))
            assert(redis.call("SET", "code_" .. acc.email, "654321", "PX", 100))
            assert(util.wait_until(function() return not exists("code_" .. acc.email) end, 2000,
                "the code to expire"))
            assert.same({ error = 1003 }, call("/user_register", register_body(acc, "654321")))
        end)

        it("answers 1003 to a code that was used already", function()
            local acc = fresh()
            local code = give_code(acc.email)
            assert.equal(0, call("/user_register", register_body(acc, code)).error)
            local again = fresh()
            again.email = acc.email
            assert.same({ error = 1003 }, call("/user_register", register_body(again, code)))
        end)

        it("answers 1004 to a wrong code; the 5th wrong try deletes it, then 1003", function()
            local acc = fresh()
            local code = give_code(acc.email)
            for i = 1, 4 do
                assert.same({ error = 1004 },
                    call("/user_register", register_body(acc, wrong(code))))
                assert.equal(tostring(i), redis.call("GET", "code_tries_" .. acc.email))
            end
            local ttl = redis.call("TTL", "code_tries_" .. acc.email)
            assert.truthy(ttl > 0 and ttl <= 600)
            assert.same({ error = 1004 }, call("/user_register", register_body(acc, wrong(code))))
            assert.is_false(exists("code_" .. acc.email))
            assert.is_false(exists("code_tries_" .. acc.email))
            assert.same({ error = 1003 }, call("/user_register", register_body(acc, code)))
        end)

        it("answers 1005 for a taken name (any case) or e-mail and keeps the code", function()
            local first = fresh()
            register(first)
            local acc = fresh()
            local code = give_code(acc.email)
            for _, name in ipairs({ first.user, first.user:upper() }) do
                local body = register_body(acc, code)
                body.user = name
                assert.same({ error = 1005 }, call("/user_register", body))
            end
            assert.equal(code, redis.call("GET", "code_" .. acc.email))
            local other = fresh()
            other.email = first.email
            assert.same({ error = 1005 },
                call("/user_register", register_body(other, give_code(first.email))))
        end)

        -- Sends the registration bodies at once; -> their error codes, sorted.
        local function race_registrations(bodies)
            local tasks = {}
            for i, body in ipairs(bodies) do
                tasks[i] = host.spawn(function() return call("/user_register", body) end)
            end
            local errs = {}
            for i = 1, #bodies do
                local ok, rsp = tasks[i]:wait()
                assert.is_true(ok, rsp)
                errs[i] = rsp.error
            end
            table.sort(errs)
            return errs
        end

        it("lets exactly one of two racing registrations of one name succeed", function()
            local a, b = fresh(), fresh()
            b.user = a.user
            local errs = race_registrations({ register_body(a, give_code(a.email)),
                register_body(b, give_code(b.email)) })
            assert.same({ 0, 1005 }, errs)
            local rows = assert(db.query("SELECT COUNT(*) AS n FROM user WHERE name = ?", a.user))
            assert.equal(1, rows[1].n)
        end)

        it("lets exactly one of two racing registrations of one e-mail succeed", function()
            local a, b = fresh(), fresh()
            b.email = a.email
            local code = give_code(a.email)
            local errs = race_registrations({ register_body(a, code), register_body(b, code) })
            assert.equal(0, errs[1])
            assert.truthy(errs[2] == 1005 or errs[2] == 1003, tostring(errs[2]))
            local rows = assert(db.query("SELECT COUNT(*) AS n FROM user WHERE email = ?", a.email))
            assert.equal(1, rows[1].n)
        end)

        it("answers 1005 for a taken name or e-mail without hashing a password", function()
            local first = fresh()
            register(first)
            local hashed = metric("chathost_hashes_total")
            local acc = fresh()
            local body = register_body(acc, give_code(acc.email))
            body.user = first.user:upper()
            assert.same({ error = 1005 }, call("/user_register", body))
            local other = fresh()
            other.email = first.email
            assert.same({ error = 1005 },
                call("/user_register", register_body(other, give_code(first.email))))
            assert.equal(hashed, metric("chathost_hashes_total"))
            assert.equal("1", redis.call("GET", "rate:hash_ip:" .. PEER)) -- first's only
        end)

        it("answers 1017 once the client IP hashed 20 passwords in an hour; the code stays",
            function()
                assert(redis.call("SET", "rate:hash_ip:" .. PEER, 19, "EX", 3600))
                register(fresh())
                local acc = fresh()
                local code = give_code(acc.email)
                local hashed = metric("chathost_hashes_total")
                local rsp = call("/user_register", register_body(acc, code))
                assert.equal(1017, rsp.error)
                assert.truthy(rsp.retry_after > 3500 and rsp.retry_after <= 3600)
                assert.equal(hashed, metric("chathost_hashes_total"))
                assert.equal(code, redis.call("GET", "code_" .. acc.email))
                assert.is_false(exists("code_hashes_" .. acc.email))
            end)

        it("lets a code hash 3 passwords; the 4th try answers 1003 and deletes it", function()
            local acc = fresh()
            acc.user = "gsrefuse_" .. host.crypto.random_hex(4)
            local code = give_code(acc.email)
            assert(db.exec("DROP TRIGGER IF EXISTS t_gatespec_refuse_insert"))
            assert(db.exec([[CREATE TRIGGER t_gatespec_refuse_insert BEFORE INSERT ON user
                FOR EACH ROW IF NEW.name LIKE 'gsrefuse%' THEN
                    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by gate_spec';
                END IF]]))
            local errs = {}
            for i = 1, 4 do
                local ok, rsp = pcall(call, "/user_register", register_body(acc, code))
                errs[i] = ok and rsp.error or rsp
            end
            assert(db.exec("DROP TRIGGER IF EXISTS t_gatespec_refuse_insert"))
            assert.same({ 1019, 1019, 1019, 1003 }, errs)
            assert.is_false(exists("code_" .. acc.email))
            assert.is_false(exists("code_hashes_" .. acc.email))
        end)

        it("hashes at most 3 passwords for a burst of registrations with one code", function()
            local acc = fresh()
            local code = give_code(acc.email)
            local bodies = {}
            for i = 1, 8 do
                bodies[i] = register_body(acc, code)
                bodies[i].user = acc.user .. "_" .. i
            end
            local hashed = metric("chathost_hashes_total")
            local errs = race_registrations(bodies)
            assert.equal(0, errs[1])
            for i = 2, #errs do
                assert.truthy(errs[i] == 1005 or errs[i] == 1003, tostring(errs[i]))
            end
            local spent = metric("chathost_hashes_total") - hashed
            assert.truthy(spent >= 1 and spent <= 3, spent)
        end)
    end)

    describe("POST /reset_pwd", function()
        local function reset_body(acc, code, clear)
            return { user = acc.user, email = acc.email, passwd = obf(clear or "Passw0rd!"),
                varifycode = code }
        end

        it("sets a new password once per code: the old password stops working", function()
            local acc = fresh()
            register(acc, "abc123")
            local code = give_code(acc.email)
            assert.same({ error = 0, user = acc.user, email = acc.email },
                call("/reset_pwd", reset_body(acc, code)))
            assert.is_false(exists("code_" .. acc.email))
            assert.equal(1009, login(acc.email, "abc123").error)
            assert.equal(0, login(acc.email, "Passw0rd!").error)
            assert.same({ error = 1003 }, call("/reset_pwd", reset_body(acc, code, "Other1!")))
        end)

        it("answers 1001 and 1016 like registration", function()
            assert.equal(1001, call("/reset_pwd", "not json").error)
            assert.same({ error = 1001, field = "varifycode" },
                call("/reset_pwd", { user = "x", email = "a@b.c", passwd = "x", varifycode = 1 }))
            local acc = fresh()
            for _, c in ipairs({ { "user", nil }, { "email", "nope" }, { "passwd", obf("short") },
                { "varifycode", nil } }) do
                local body = reset_body(acc, "123456")
                body[c[1]] = c[2]
                assert.same({ error = 1016, field = c[1] }, call("/reset_pwd", body))
            end
        end)

        it("answers 1003 without a code and 1004 to a wrong one", function()
            local acc = fresh()
            assert.same({ error = 1003 }, call("/reset_pwd", reset_body(acc, "123456")))
            local code = give_code(acc.email)
            assert.same({ error = 1004 }, call("/reset_pwd", reset_body(acc, wrong(code))))
            assert.equal("1", redis.call("GET", "code_tries_" .. acc.email))
        end)

        it("answers 1007 to an unknown name or one with another e-mail; the code stays", function()
            local owner = fresh()
            register(owner)
            local intruder = fresh()
            local code = give_code(intruder.email)
            local body = reset_body(intruder, code)
            assert.same({ error = 1007 }, call("/reset_pwd", body))
            body.user = owner.user
            assert.same({ error = 1007 }, call("/reset_pwd", body))
            assert.equal(code, redis.call("GET", "code_" .. intruder.email))
            assert.equal(0, login(owner.email, "abc123").error)
        end)

        it("answers 1008 when the database refuses the update", function()
            local acc = fresh()
            acc.user = "gsrefuse_" .. host.crypto.random_hex(4)
            register(acc)
            assert(db.exec("DROP TRIGGER IF EXISTS t_gatespec_refuse"))
            assert(db.exec([[CREATE TRIGGER t_gatespec_refuse BEFORE UPDATE ON user FOR EACH ROW
                IF NEW.name LIKE 'gsrefuse%' THEN
                    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by gate_spec';
                END IF]]))
            local ok, rsp = pcall(call, "/reset_pwd", reset_body(acc, give_code(acc.email)))
            assert(db.exec("DROP TRIGGER IF EXISTS t_gatespec_refuse"))
            assert(ok, rsp)
            assert.same({ error = 1008 }, rsp)
            assert.equal(0, login(acc.email, "abc123").error)
        end)

        it("answers 1017 once the client IP hashed 20 passwords, registrations included",
            function()
                local acc = fresh()
                register(acc)
                assert(redis.call("SET", "rate:hash_ip:" .. PEER, 20, "EX", 3600))
                local code = give_code(acc.email)
                local rsp = call("/reset_pwd", reset_body(acc, code))
                assert.equal(1017, rsp.error)
                assert.truthy(rsp.retry_after > 3500 and rsp.retry_after <= 3600)
                assert.equal(code, redis.call("GET", "code_" .. acc.email))
                assert.equal(0, login(acc.email, "abc123").error)
            end)

        it("lets a code hash 3 passwords, then answers 1003", function()
            local acc = fresh()
            register(acc)
            local code = give_code(acc.email)
            assert(redis.call("SET", "code_hashes_" .. acc.email, 3, "EX", 600))
            assert.same({ error = 1003 }, call("/reset_pwd", reset_body(acc, code)))
            assert.is_false(exists("code_" .. acc.email))
            assert.equal(0, login(acc.email, "abc123").error)
            code = give_code(acc.email)
            assert(redis.call("SET", "code_hashes_" .. acc.email, 2, "EX", 600))
            assert.equal(0, call("/reset_pwd", reset_body(acc, code)).error)
            assert.is_false(exists("code_hashes_" .. acc.email))
        end)

        it("lifts the lock-out of the client IP and the e-mail's backoff", function()
            local acc = fresh()
            register(acc)
            local pair = "rate:login_email_ip:" .. acc.email .. "|" .. PEER
            assert(redis.call("SET", pair, 5, "EX", 900))
            assert.equal(1017, login(acc.email, "abc123").error)
            assert(redis.call("SET", "rate:login_email:" .. acc.email, 9, "EX", 900))
            assert(redis.call("SET", "rate:login_backoff:" .. acc.email, 9, "EX", 60))
            assert.equal(0, call("/reset_pwd", reset_body(acc, give_code(acc.email))).error)
            assert.is_false(exists(pair))
            assert.is_false(exists("rate:login_email:" .. acc.email))
            assert.equal(0, login(acc.email, "Passw0rd!").error)
        end)
    end)

    describe("POST /user_login", function()
        it("answers 1001 and 1016", function()
            local bodies = { "{", "[]]", { email = 1, passwd = "x" },
                { email = "a@b.c", passwd = {} } }
            for _, body in ipairs(bodies) do
                assert.equal(1001, call("/user_login", body).error)
            end
            assert.same({ error = 1016, field = "email" },
                call("/user_login", { passwd = "gde745" }))
            assert.same({ error = 1016, field = "email" },
                call("/user_login", { email = "nobody", passwd = "gde745" }))
            assert.same({ error = 1016, field = "passwd" },
                call("/user_login", { email = "a@b.cd" }))
        end)

        it("adds wsurl when the chosen chat server announces a WebSocket port", function()
            local acc = fresh()
            register(acc)
            assert(redis.call("SET", "chatserver_" .. chat_name,
                host.json.encode({ host = "127.0.0.1", port = 18090, ws_port = 18096 }), "EX", 600))
            local rsp = login(acc.email, "abc123")
            assert(redis.call("SET", "chatserver_" .. chat_name,
                host.json.encode({ host = "127.0.0.1", port = 18090 }), "EX", 600))
            assert.equal(0, rsp.error)
            assert.equal("ws://127.0.0.1:18096/", rsp.wsurl)
            assert.same({ "127.0.0.1", "18090" }, { rsp.chathost, rsp.chatport })
        end)

        it("answers 1009 alike to a wrong password, an unknown e-mail and a refused password",
            function()
                local acc = fresh()
                register(acc)
                assert.same({ error = 1009 }, login(acc.email, "abc124"))
                assert.same({ error = 1009 }, login(fresh().email, "abc123"))
                assert.same({ error = 1009 }, login(acc.email, "no"))
            end)

        it("verifies a hash for an unknown e-mail as for a wrong password (a dummy hash)",
            function()
                -- the gate counts every verification and the thread CPU spent hashing,
                -- and only then (no other request reaches this gate meanwhile)
                local acc = fresh()
                register(acc)
                for _, email in ipairs({ acc.email, fresh().email }) do
                    local cpu = metric("chathost_hash_cpu_seconds_total")
                    local verified = metric("chathost_hash_verifications_total")
                    local hashed = metric("chathost_hashes_total")
                    assert.equal(1009, login(email, "wrong1").error)
                    assert.equal(verified + 1, metric("chathost_hash_verifications_total"), email)
                    assert.equal(hashed, metric("chathost_hashes_total"), email)
                    assert.truthy(metric("chathost_hash_cpu_seconds_total") > cpu,
                        "no password hash was verified for " .. email)
                end
            end)

        it("answers 1017 with retry_after after 5 failures for an e-mail from one IP",
            function()
                local acc = fresh()
                register(acc)
                for _ = 1, 4 do assert.same({ error = 1009 }, login(acc.email, "wrong1")) end
                assert.equal(0, login(acc.email, "abc123").error)
                for _ = 1, 5 do assert.same({ error = 1009 }, login(acc.email, "wrong1")) end
                -- the e-mail's backoff (gate_limits_spec) ends long before the IP's lock-out
                redis.call("DEL", "rate:login_backoff:" .. acc.email)
                local rsp = login(acc.email, "abc123")
                assert.equal(1017, rsp.error)
                assert.truthy(rsp.retry_after > 800 and rsp.retry_after <= 900)
                assert.is_nil(rsp.token)
                local ttl = redis.call("TTL", "rate:login_email_ip:" .. acc.email .. "|" .. PEER)
                assert.truthy(ttl > 800 and ttl <= 900)
            end)

        it("answers 1017 once the client IP has failed 50 times", function()
            assert(redis.call("SET", "rate:login_ip:" .. PEER, 50, "EX", 900))
            local rsp = login(fresh().email, "abc123")
            assert.equal(1017, rsp.error)
            assert.truthy(rsp.retry_after > 800 and rsp.retry_after <= 900)
        end)

        it("checks no more passwords than the limit when guesses arrive all at once", function()
            local acc = fresh()
            register(acc)
            local tasks = {}
            for i = 1, 8 do
                tasks[i] = host.spawn(function() return login(acc.email, "wrong" .. i) end)
            end
            local count = {}
            for i = 1, 8 do
                local ok, rsp = tasks[i]:wait()
                assert.is_true(ok, rsp)
                count[rsp.error] = (count[rsp.error] or 0) + 1
            end
            assert.same({ [1009] = 5, [1017] = 3 }, count)
        end)

        it("forgets an e-mail's failures after a success", function()
            local acc = fresh()
            register(acc)
            for _ = 1, 2 do assert.equal(1009, login(acc.email, "wrong1").error) end
            local pair = "rate:login_email_ip:" .. acc.email .. "|" .. PEER
            assert.equal("2", redis.call("GET", pair))
            assert.equal("2", redis.call("GET", "rate:login_email:" .. acc.email))
            assert.equal(0, login(acc.email, "abc123").error)
            assert.is_false(exists(pair))
            assert.is_false(exists("rate:login_email:" .. acc.email))
            assert.equal("2", redis.call("GET", "rate:login_ip:" .. PEER)) -- successes do not count
        end)

        it("re-hashes a password made with other argon2 costs at a successful login", function()
            local acc = fresh()
            local uid = register(acc)
            -- "Passw0rd!" hashed with m=8192,t=1
            local cheap = "$argon2id$v=19$m=8192,t=1,p=1$iDm8Ki4rzEPQgGZ5vRWugw$"
                .. "OIbRVJSucTK5Jun6Ikq92knSnDdn1k6nfKiyMo7F/0o"
            assert(db.exec("UPDATE user SET pwd_hash = ? WHERE uid = ?", cheap, uid))
            assert.equal(0, login(acc.email, "Passw0rd!").error)
            local rows = assert(db.query("SELECT pwd_hash FROM user WHERE uid = ?", uid))
            assert.matches("^%$argon2id%$v=19%$m=19456,t=2,p=1%$", rows[1].pwd_hash)
            assert.equal(0, login(acc.email, "Passw0rd!").error)
        end)

        it("answers 1002 within the deadline when the status role does not answer", function()
            local acc = fresh()
            register(acc)
            local t0 = host.timer.monotonic()
            assert.same({ error = 1002 }, login(acc.email, "abc123", down.port))
            local took = host.timer.monotonic() - t0
            assert.truthy(took >= RPC_TIMEOUT_MS - 50 and took < RPC_TIMEOUT_MS + 1000, took)
        end)
    end)

    describe("hot reload", function()
        it("serves edited scripts without a restart", function()
            local init = gate.scripts .. "/gate/init.lua"
            local original = assert(host.fs.read(init))
            local function marked()
                return call("/user_login", {}).reloaded == true
            end
            assert.is_false(marked())
            assert(host.fs.write(gate.scripts .. "/gate/routes_before_edit.lua", original))
            assert(host.fs.write(init, [[
local before = require "gate.routes_before_edit"
local routes = {}
for k, v in pairs(before.routes) do routes[k] = v end
routes["POST /user_login"] = function(req)
    local rsp = before.routes["POST /user_login"](req)
    rsp.reloaded = true
    return rsp
end
return { routes = routes }
]]))
            assert(util.wait_until(marked, 5000, "the edited login route"))
            assert(host.fs.write(init, original))
            assert(util.wait_until(function() return not marked() end, 5000, "the original route"))
            assert.falsy(gate.proc.exited)
        end)
    end)
end)

describe("gate role when Redis does not answer in time", function()
    it("answers 1018 (safe to retry), as the chat servers do for a timeout", function()
        local admin_port
        local gate = roles.start { role = "gate", config = function(port)
            admin_port = roles.free_port()
            return { gate = { port = port, admin_port = admin_port },
                redis = { command_timeout_ms = 100, pool_size = 1 } }
        end }
        -- its one Redis connection is up (a command waiting for a connection would get
        -- "redis unavailable: ...", not the timeout this is about)
        assert.equal(200, assert(http.get(admin_port, "/healthz")).status)
        -- every client's commands wait while Redis is paused: the gate's rate check times out
        assert(redis.call("CLIENT", "PAUSE", 1000, "ALL"))
        local res = assert(http.post(gate.port, "/get_varifycode", { email = "paused@example.com" }))
        redis.call("CLIENT", "UNPAUSE")
        assert.equal(200, res.status)
        assert.equal(1018, host.json.decode(res.body).error, gate:log())
        assert(gate:await("get_varifycode: rate check failed: timeout", 2000))
        assert.equal(0, gate:stop())
    end)
end)

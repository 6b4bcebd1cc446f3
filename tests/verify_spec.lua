-- The verify role: 6-digit codes in Redis with a TTL, mailed through a real SMTP server,
-- reused while alive, rate limited per address, never returned over gRPC.
local host = require "host"
local roles = require "helpers.roles"
local smtp_sink = require "helpers.smtp_sink"
local py = require "helpers.grpc_py"
local util = require "helpers.util"
local http = require "helpers.http"
local redis = host.redis

describe("verify role", function()
    local verify, sink, target
    local n = 0

    local function fresh_email()
        n = n + 1
        return ("user%d.%s@example.com"):format(n, host.crypto.random_hex(3))
    end

    local function code_in_mail(email)
        local m = assert(sink:wait_for(function(m) return m.headers["x-rcptto"] == email end))
        return m.body:match("code is (%d%d%d%d%d%d)")
    end

    local function ask(email)
        return assert(host.grpc.call(target, "VarifyService.GetVarifyCode", { email = email }))
    end

    setup(function()
        sink = smtp_sink.start()
        verify = roles.start { role = "verify", config = function(port)
            return { verify = { port = port, admin_port = 0 },
                mail = { url = "smtp://127.0.0.1:" .. sink.port } }
        end }
        target = "127.0.0.1:" .. verify.port
    end)

    teardown(function()
        assert.equal(0, verify:stop())
        sink:stop()
    end)

    it("mails a 6-digit code, stores it with a TTL, and never returns it", function()
        local email = fresh_email()
        local rsp = ask(email)
        assert.same({ error = 0, email = email, code = "" }, rsp)
        local code = code_in_mail(email)
        assert.matches("^%d%d%d%d%d%d$", code)
        assert.equal(code, redis.call("GET", "code_" .. email))
        local ttl = redis.call("TTL", "code_" .. email)
        assert.truthy(ttl > 590 and ttl <= 600)
        assert.is_nil(verify:log():find(code, 1, true))
        assert.is_nil(verify:log():find(email, 1, true)) -- the address only masked
        assert.truthy(verify:log():find("code sent to u***@example.com", 1, true))
    end)

    it("refuses a second request for the address within the rate window", function()
        local email = fresh_email()
        assert.equal(0, ask(email).error)
        assert.equal(1017, ask(email).error)
        local ttl = redis.call("TTL", "rate:mail:" .. email)
        assert.truthy(ttl > 0 and ttl <= 60)
    end)

    it("reuses a live code when the address asks again after the window", function()
        local email = fresh_email()
        assert.equal(0, ask(email).error)
        local first = code_in_mail(email)
        redis.call("DEL", "rate:mail:" .. email) -- as if the window had passed
        assert.equal(0, ask(email).error)
        local mails = 0
        for _, m in ipairs(sink:messages()) do
            if m.headers["x-rcptto"] == email then
                mails = mails + 1
                assert.equal(first, m.body:match("code is (%d+)"))
            end
        end
        assert.equal(2, mails)
    end)

    it("rejects an invalid address with 1016 and sends nothing", function()
        local bads = { "", "no-at-sign", "a@b", "a@@b.com", "a@b..com", ("x"):rep(300) .. "@b.com" }
        local is_bad = {}
        for _, bad in ipairs(bads) do
            is_bad[bad] = true
            assert.equal(1016, ask(bad).error)
            assert.equal(0, redis.call("EXISTS", "code_" .. bad))
            assert.equal(0, redis.call("EXISTS", "rate:mail:" .. bad))
        end
        -- a good address afterwards: once its mail is in the sink, any mail to a bad one
        -- (sent before the reply, or queued before this one) would be too
        local good = fresh_email()
        assert.equal(0, ask(good).error)
        assert(code_in_mail(good))
        for _, m in ipairs(sink:messages()) do
            local to = m.headers["x-rcptto"] or ""
            assert.falsy(is_bad[to], "a mail was sent to the invalid address " .. to)
        end
    end)

    it("answers INTERNAL naming the mail's failure, keeps no code, and logs the address masked "
        .. "when the mail cannot be sent", function()
        local down = roles.start { role = "verify", config = function(port)
            return { verify = { port = port, admin_port = 0 },
                mail = { url = "smtp://127.0.0.1:1", timeout_ms = 1000 } }
        end }
        local email = fresh_email()
        local rsp, err, code = host.grpc.call("127.0.0.1:" .. down.port,
            "VarifyService.GetVarifyCode", { email = email }, { timeout_ms = 5000 })
        assert.is_nil(rsp)
        assert.equal(13, code)
        assert.matches("^INTERNAL: mail to u%*%*%*@example%.com failed: smtp: ", err)
        assert.equal(0, redis.call("EXISTS", "code_" .. email))
        assert.equal(0, redis.call("EXISTS", "rate:mail:" .. email))
        local log = down:log()
        assert.truthy(log:find("GetVarifyCode: mail to u***@example.com failed: smtp: ", 1, true),
            log)
        assert.is_nil(log:find(email, 1, true), log)
        assert.equal(0, down:stop())
    end)

    it("answers Python grpcio clients", function()
        local email = fresh_email()
        local r = py.call(target, "VarifyService.GetVarifyCode", { email = email })
        assert.is_true(r.ok)
        assert.equal(0, r.reply.error)
        assert.equal("", r.reply.code)
        assert.truthy(code_in_mail(email))
    end)
end)

-- Deadlines along a code request nest: the mail gives up before verify's caller does, and
-- the caller hears why.
describe("verify role's deadlines", function()
    local stalled, verify, gate

    setup(function()
        stalled = smtp_sink.start_stalled()
        verify = roles.start { role = "verify", config = function(port)
            return { verify = { port = port, admin_port = 0, reply_margin_ms = 500 },
                mail = { url = "smtp://127.0.0.1:" .. stalled.port } } -- timeout_ms 10000
        end }
        gate = roles.start { role = "gate", config = function(port)
            return { gate = { port = port, admin_port = 0, accounts = {
                verify_target = "127.0.0.1:" .. verify.port, rpc_timeout_ms = 2000 } },
                verify = { reply_margin_ms = 500 } }
        end }
    end)

    teardown(function()
        assert.equal(0, gate:stop())
        assert.equal(0, verify:stop())
        stalled:stop()
    end)

    local function email()
        return ("stall.%s@example.com"):format(host.crypto.random_hex(4))
    end

    it("answers a mail server that never answers within the caller's deadline, naming the mail",
        function()
        local addr = email()
        local rsp, err, code = host.grpc.call("127.0.0.1:" .. verify.port,
            "VarifyService.GetVarifyCode", { email = addr }, { timeout_ms = 2000 })
        assert.is_nil(rsp)
        assert.equal(13, code, err) -- not 4 DEADLINE_EXCEEDED: verify answered first
        assert.matches("^INTERNAL: mail to s%*%*%*@example%.com failed: smtp: .*timed out", err)
        assert.equal(0, redis.call("EXISTS", "code_" .. addr))
        assert.equal(0, redis.call("EXISTS", "rate:mail:" .. addr))
        assert.is_nil(verify:log():find(addr, 1, true))
    end)

    it("sends nothing when the caller's deadline leaves less than verify.reply_margin_ms",
        function()
        local addr = email()
        -- 300 ms is below the margin (500): no time for a mail, answered at once
        local rsp, err, code = host.grpc.call("127.0.0.1:" .. verify.port,
            "VarifyService.GetVarifyCode", { email = addr }, { timeout_ms = 300 })
        assert.is_nil(rsp)
        assert.equal(13, code, err)
        assert.matches("^INTERNAL: mail to s%*%*%*@example%.com failed: no time left: the "
            .. "caller's deadline leaves %d+ ms, verify%.reply_margin_ms is 500", err)
        assert.equal(0, redis.call("EXISTS", "code_" .. addr))
    end)

    it("makes the gate answer 1002 and log verify's reason, not 'unreachable'", function()
        local addr = email()
        local res = assert(http.post(gate.port, "/get_varifycode", { email = addr }))
        assert.equal(1002, host.json.decode(res.body).error)
        local log = gate:log()
        local line = log:match("get_varifycode: 1002 [^\n]*")
        assert.truthy(line, log)
        assert.matches("1002 verify failed: INTERNAL: mail to s%*%*%*@example%.com failed: smtp: ",
            line)
        assert.is_nil(log:find("unreachable", 1, true), log)
        assert.is_nil(log:find(addr, 1, true), log)
        assert.is_nil(verify:log():find(addr, 1, true))
    end)
end)

describe("verify's deadline margin in config", function()
    local function config_with(gate_ms, margin)
        local dir = assert(host.fs.mkdtemp("verifycfg"))
        assert(host.fs.write(dir .. "/config.lua", "return " .. roles.serialize {
            gate = { accounts = { rpc_timeout_ms = gate_ms } },
            verify = { reply_margin_ms = margin } }))
        local r = util.chathost({ "config", "-c", dir .. "/config.lua", "verify.reply_margin_ms" })
        host.fs.rmtree(dir)
        return r
    end

    it("refuses a gate deadline for verify that is not longer than the margin", function()
        local r = config_with(200, 200)
        assert.equal(2, r.code)
        assert.equal("chathost: config: gate.accounts.rpc_timeout_ms: 200 ms leaves verify no "
            .. "time to send a mail (verify.reply_margin_ms is 200)\n", r.stderr)
        local ok = config_with(201, 200)
        assert.equal(0, ok.code, ok.stderr)
        assert.equal("200\n", ok.stdout)
    end)
end)

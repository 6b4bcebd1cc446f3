-- Calls between roles are authenticated (issue 10, item 6): every call carries grpc.secret
-- (metadata authorization: Bearer <secret>), every server refuses a call without it with
-- UNAUTHENTICATED before any handler runs; optionally the links are TLS (grpc.tls).
local host = require "host"
local roles = require "helpers.roles"
local util = require "helpers.util"
local S = host.grpc.status

describe("gRPC shared secret", function()
    local server, target
    local calls = 0

    setup(function()
        assert(host.config.grpc.secret, "make test exports CHATHOST_GRPC_SECRET")
        server = assert(host.grpc.serve { address = "127.0.0.1:0", handlers = {
            ["StatusService.GetChatServer"] = function(req)
                calls = calls + 1
                return { error = 0, host = "h", port = "1", token = "t" .. req.uid }
            end,
        } })
        target = "127.0.0.1:" .. server.port
    end)

    teardown(function() server:close() end)

    it("serves a call that carries the configured secret", function()
        local rsp = assert(host.grpc.call(target, "StatusService.GetChatServer", { uid = 7 }))
        assert.equal("t7", rsp.token)
    end)

    it("refuses a call without the secret or with another one, running no handler", function()
        local before = calls
        for _, secret in ipairs({ false, "not-the-secret", host.config.grpc.secret .. "x" }) do
            local rsp, err, code = host.grpc.call(target, "StatusService.GetChatServer", { uid = 7 },
                { secret = secret })
            assert.is_nil(rsp)
            assert.equal(S.UNAUTHENTICATED, code)
            assert.matches("missing or wrong grpc secret", err)
        end
        assert.equal(before, calls)
    end)

    it("refuses an unauthenticated call to a role (status cannot be asked for tokens)", function()
        local status = roles.start { role = "status", config = function(port)
            return { status = { port = port, admin_port = 0 } }
        end }
        local t = "127.0.0.1:" .. status.port
        local _, _, code = host.grpc.call(t, "StatusService.GetChatServer", { uid = 1001 },
            { secret = false })
        assert.equal(S.UNAUTHENTICATED, code)
        assert(status:await("without the right grpc.secret: refused"))
        assert.equal(0, status:stop())
    end)
end)

describe("gRPC over TLS", function()
    timeout(30000)
    local dir

    local function openssl(args)
        local argv = { "openssl" }
        for _, a in ipairs(args) do argv[#argv + 1] = a end
        local r = assert(host.proc.run(argv, { timeout_ms = 20000 }))
        assert(r.code == 0, "openssl failed: " .. r.stderr)
    end

    -- A CA, and one certificate it signed for 127.0.0.1 (every role of the cluster shares it).
    setup(function()
        dir = assert(host.fs.mkdtemp("tls"))
        openssl { "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test ca",
            "-keyout", dir .. "/ca.key", "-out", dir .. "/ca.pem" }
        openssl { "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=chathost",
            "-keyout", dir .. "/node.key", "-out", dir .. "/node.csr" }
        assert(host.fs.write(dir .. "/ext.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"))
        openssl { "x509", "-req", "-in", dir .. "/node.csr", "-CA", dir .. "/ca.pem", "-CAkey",
            dir .. "/ca.key", "-CAcreateserial", "-days", "2", "-extfile", dir .. "/ext.cnf",
            "-out", dir .. "/node.pem" }
    end)

    teardown(function() host.fs.rmtree(dir) end)

    local function tls()
        return { cert_file = dir .. "/node.pem", key_file = dir .. "/node.key",
            ca_file = dir .. "/ca.pem" }
    end

    -- Calls status from another process with the given grpc settings; -> its stdout line.
    local function call_from(port, grpc)
        local cfg = dir .. "/client" .. host.crypto.random_hex(3) .. ".lua"
        assert(host.fs.write(cfg, "return " .. roles.serialize({ grpc = grpc,
            scripts = { dir = host.root .. "/scripts" } }) .. "\n"))
        local script = dir .. "/call.lua"
        assert(host.fs.write(script, ([[
local host = require "host"
local rsp, err, code = host.grpc.call("127.0.0.1:%d", "StatusService.Login",
    { uid = 1, token = "x" }, { timeout_ms = 3000 })
print(rsp and ("ok " .. rsp.error) or ("failed " .. tostring(code)))
]]):format(port)))
        return util.chathost({ "exec", script, "-c", cfg }).stdout
    end

    it("serves a TLS client with the shared CA and refuses a plain-text one", function()
        local status = roles.start { role = "status", config = function(port)
            return { status = { port = port, admin_port = 0, probe_interval_ms = 0 },
                grpc = { tls = tls() } }
        end }
        assert.equal("ok 1010\n", call_from(status.port, { tls = tls() }))
        assert.equal("failed " .. S.UNAVAILABLE .. "\n", call_from(status.port, {}))
        assert.equal(0, status:stop())
    end)

    it("will not start a server whose certificate cannot be read", function()
        local t = tls()
        t.cert_file = dir .. "/missing.pem"
        local cfg = dir .. "/bad.lua"
        assert(host.fs.write(cfg, "return " .. roles.serialize({ grpc = { tls = t },
            status = { port = roles.free_port(), admin_port = 0 },
            scripts = { dir = host.root .. "/scripts" } }) .. "\n"))
        local r = util.chathost({ "status", "-c", cfg }, { timeout_ms = 10000 })
        assert.are_not.equal(0, r.code)
        assert.matches("grpc.tls.cert_file: cannot read .*missing.pem", r.stderr)
    end)
end)

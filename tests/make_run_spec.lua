-- `make run` (tools/run.sh) as a newcomer uses it: the whole system comes up (Redis,
-- MariaDB, the SMTP sink, gate, verify, status, chat1, chat2), prints where everything is,
-- serves a registration and a login, and Ctrl-C stops every process. Run on free ports in
-- a folder of its own, so it never touches a real `make run`.
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"
local util = require "helpers.util"
local password = dofile(host.root .. "/scripts/lib/password.lua")

describe("make run", function()
    local dir, proc, ports
    -- a whole system starts (MariaDB's first start included) and stops: its waits below
    -- (60 s up, 30 s down) are what bound it, not test.timeout_ms
    timeout(90000)

    setup(function()
        dir = assert(host.fs.mkdtemp("makerun"))
        ports = {}
        for _, k in ipairs({ "redis", "mysql", "mail", "gate", "gate_admin", "verify", "status",
            "c1", "c1rpc", "c2", "c2rpc" }) do ports[k] = roles.free_port() end
        assert(host.fs.write(dir .. "/config.lua", "return " .. roles.serialize {
            scripts = { dir = host.root .. "/scripts" }, migrations = { dir = host.root .. "/sql" },
            redis = { port = ports.redis }, mysql = { port = ports.mysql },
            mail = { url = "smtp://127.0.0.1:" .. ports.mail },
            gate = { host = "127.0.0.1", port = ports.gate, admin_port = ports.gate_admin },
            verify = { port = ports.verify, admin_port = 0 },
            status = { port = ports.status, admin_port = 0 },
            chat = { instances = {
                chat1 = { port = ports.c1, rpc_port = ports.c1rpc, admin_port = 0 },
                chat2 = { port = ports.c2, rpc_port = ports.c2rpc, admin_port = 0 } } },
        }))
        local env = { CHATHOST_RUN_DIR = dir .. "/run", CHATHOST_CONFIG = dir .. "/config.lua",
            CHATHOST_BIN = util.bin() }
        -- the addresses `make test` exports are for its own stores, not this system's
        for _, k in ipairs({ "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "MYSQL_HOST", "MYSQL_PORT",
            "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE" }) do env["CHATHOST_" .. k] = false end
        proc = assert(host.proc.spawn({ host.root .. "/tools/run.sh" },
            { env = env, stdout = "capture", stderr = "capture" }))
        assert(util.wait_until(function()
            return proc:output():find("Ctrl-C stops everything", 1, true) or proc.exited
        end, 60000, "the system to come up"))
    end)

    teardown(function()
        -- Ctrl-C first: run.sh's trap stops Redis, MariaDB and the sink (a SIGKILL would
        -- skip it and leave them running); SIGKILL only if it does not end in time
        if not proc.exited then
            proc:kill("INT")
            if not proc:wait(8000) then
                proc:kill("KILL")
                proc:wait()
            end
        end
        host.fs.rmtree(dir)
    end)

    it("prints every address and the client command", function()
        local out = proc:output()
        assert.matches("chathost is up:", out)
        assert.matches("gate +http://127%.0%.0%.1:" .. ports.gate, out)
        assert.matches("chat1 +chat clients on 127%.0%.0%.1:" .. ports.c1, out)
        assert.matches("chat2 +chat clients on 127%.0%.0%.1:" .. ports.c2, out)
        assert.matches("verify +gRPC 127%.0%.0%.1:" .. ports.verify, out)
        assert.matches("status +gRPC 127%.0%.0%.1:" .. ports.status, out)
        assert.matches("to chat, run in two other terminals: +%S+ client %-c %S+config%.lua", out)
    end)

    it("registers and logs in through the gate, with the code from the mail folder", function()
        local email = "newcomer" .. host.crypto.random_hex(3) .. "@example.com"
        local res = assert(http.post(ports.gate, "/get_varifycode", { email = email }))
        assert.equal(0, res.json.error)
        local code = util.wait_until(function()
            for _, name in ipairs(host.fs.list(dir .. "/run/mail/new") or {}) do
                local text = host.fs.read(dir .. "/run/mail/new/" .. name)
                if text and text:find(email, 1, true) then return text:match("code is (%d+)") end
            end
        end, 10000, "the mail")
        local pw = password.xor("Newbie.1")
        local reg = assert(http.post(ports.gate, "/user_register", { user = "nb" .. host.crypto.random_hex(3),
            email = email, passwd = pw, confirm = pw, varifycode = code }))
        assert.equal(0, reg.json.error)
        local login = assert(util.wait_until(function() -- chat servers announce themselves at start
            local r = http.post(ports.gate, "/user_login", { email = email, passwd = pw })
            return r and r.json.error == 0 and r
        end, 10000, "a login with a chat server"))
        assert.truthy(login.json.chatport == tostring(ports.c1) or login.json.chatport == tostring(ports.c2))
    end)

    it("stops every process on Ctrl-C", function()
        assert(proc:kill("INT"))
        local code = proc:wait(30000)
        assert.equal(0, code)
        assert.matches("%[run%] stopped", proc:output())
        -- nothing is left listening
        for _, k in ipairs({ "redis", "mysql", "mail", "gate", "verify", "status", "c1", "c2" }) do
            local c = host.tcp.connect("127.0.0.1", ports[k], { timeout_ms = 500 })
            if c then c:close() end
            assert.is_nil(c, k .. " still listening")
        end
    end)
end)

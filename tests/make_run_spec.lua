-- `make run` (tools/run.sh) as a newcomer uses it: the whole system comes up (Redis,
-- MariaDB, the SMTP sink, gate, verify, status, chat1, chat2, resource), prints where everything is,
-- serves a registration and a login, reloads every role on SIGHUP, restarts one role with
-- its secrets, and Ctrl-C stops every process; started again with a port taken by somebody
-- else, it names what did not start and stops the rest. Run on free ports in a folder of
-- its own, so it never touches a real `make run`; one system serves every test in turn.
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"
local util = require "helpers.util"
local make_run = require "helpers.make_run"
local client_tmux = require "helpers.client_tmux"
local password = dofile(host.root .. "/scripts/lib/password.lua")

describe("make run", function()
    local dir, proc, ports, env
    -- a whole system starts (MariaDB's first start included) and stops: its waits below
    -- (60 s up, 30 s down) are what bound it, not test.timeout_ms
    timeout(90000)

    setup(function()
        dir = assert(host.fs.mkdtemp("makerun"))
        ports = {}
        for _, k in ipairs({ "redis", "mysql", "mail", "gate", "gate_admin", "verify", "status",
            "c1", "c1rpc", "c2", "c2rpc", "c2admin", "res", "reshttp", "resadmin", "c1ws" }) do ports[k] = roles.free_port() end
        assert(host.fs.write(dir .. "/config.lua", "return " .. roles.serialize {
            scripts = { dir = host.root .. "/scripts" }, migrations = { dir = host.root .. "/sql" },
            redis = { port = ports.redis }, mysql = { port = ports.mysql },
            mail = { url = "smtp://127.0.0.1:" .. ports.mail },
            gate = { host = "127.0.0.1", port = ports.gate, admin_port = ports.gate_admin },
            verify = { port = ports.verify, admin_port = 0 },
            status = { port = ports.status, admin_port = 0 },
            resource = { port = ports.res, http_port = ports.reshttp, admin_port = ports.resadmin },
            chat = { instances = {
                chat1 = { port = ports.c1, rpc_port = ports.c1rpc, admin_port = 0, ws_port = ports.c1ws },
                chat2 = { port = ports.c2, rpc_port = ports.c2rpc, admin_port = ports.c2admin } } },
        }))
        env = make_run.env(dir)
        proc = make_run.start(env)
    end)

    teardown(function()
        make_run.stop(proc)
        host.fs.rmtree(dir)
    end)

    it("prints every address and the client command", function()
        local out = proc:output()
        assert.matches("chathost is up:", out)
        assert.matches("gate +http://127%.0%.0%.1:" .. ports.gate, out)
        assert.matches("chat1 +chat clients on 127%.0%.0%.1:" .. ports.c1
            .. ", WebSocket ws://127%.0%.0%.1:" .. ports.c1ws .. "/,", out)
        assert.matches("chat2 +chat clients on 127%.0%.0%.1:" .. ports.c2 .. ", gRPC", out)
        assert.matches("verify +gRPC 127%.0%.0%.1:" .. ports.verify, out)
        assert.matches("status +gRPC 127%.0%.0%.1:" .. ports.status, out)
        assert.matches("resource 127%.0%.0%.1:" .. ports.res .. " %(avatars and images, 6%-byte "
            .. "frames; files in " .. dir:gsub("%p", "%%%0") .. "/run/files%), signed downloads "
            .. "http://127%.0%.0%.1:" .. ports.reshttp, out)
        assert.matches("to chat, run in two other terminals: +%S+ client %-c %S+config%.lua", out)
        assert.matches("web client: open http://127%.0%.0%.1:" .. ports.gate .. "/ in a browser", out)
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

    it("reloads every role on SIGHUP and stops none", function()
        assert(proc:kill("HUP"))
        for _, name in ipairs({ "gate", "verify", "status", "chat1", "chat2", "resource" }) do
            util.wait_until(function()
                return proc:output():find("%[" .. name .. "%][^\n]*scripts reloaded") or proc.exited
            end, 10000, name .. " reloaded")
            assert.falsy(proc.exited, "run.sh exited on SIGHUP")
        end
        assert.matches("%[run%] reloading every role", proc:output())
    end)

    it("restarts one role with the run's secrets, and names an unknown one", function()
        local r = assert(host.proc.run({ host.root .. "/tools/run.sh", "restart", "chat2" }, { env = env }))
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.matches("restarted chat2", r.stdout)
        local _, starts = proc:output():gsub("%[run%] started chat2 %(pid", "")
        assert.equal(2, starts)
        -- its MySQL and Redis answer: it has the secrets of the run
        local health = assert(http.get(ports.c2admin, "/healthz"))
        assert.equal(200, health.status, health.body)
        r = assert(host.proc.run({ host.root .. "/tools/run.sh", "restart", "chat9" }, { env = env }))
        assert.equal(1, r.code)
        assert.matches("no role named 'chat9'", r.stdout)
        assert.falsy(proc.exited)
    end)

    it("stops every process on Ctrl-C", function()
        assert(proc:kill("INT"))
        local code = proc:wait(30000)
        assert.equal(0, code)
        assert.matches("%[run%] stopped", proc:output())
        -- nothing is left listening
        for _, k in ipairs({ "redis", "mysql", "mail", "gate", "verify", "status", "c1", "c2", "res" }) do
            local c = host.tcp.connect("127.0.0.1", ports[k], { timeout_ms = 500 })
            if c then c:close() end
            assert.is_nil(c, k .. " still listening")
        end
    end)

    -- Starts the system again (its data folder is kept) with `port` held by another
    -- process; returns run.sh's exit status and output once it has exited.
    local function start_with_port_taken(port)
        local holder = assert(host.proc.spawn({ "/usr/bin/python3", "-c", [[
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("listening", flush=True); time.sleep(600)]], tostring(port) }, { stdout = "capture" }))
        assert(util.wait_until(function() return holder:output():find("listening", 1, true) or holder.exited end,
            10000, "the holder"))
        assert.falsy(holder.exited, "cannot hold port " .. port)
        local p = assert(host.proc.spawn({ host.root .. "/tools/run.sh" },
            { env = env, stdout = "capture", stderr = "capture" }))
        util.wait_until(function() return p.exited or p:output():find("chathost is up", 1, true) end,
            60000, "run.sh to give up")
        if not p.exited then p:kill("INT") end
        local code = p:wait(30000)
        holder:kill("KILL")
        holder:wait()
        local out, err = p:output()
        -- what it started is stopped
        for _, k in ipairs({ "redis", "mysql", "gate", "verify", "status", "c1" }) do
            local c = host.tcp.connect("127.0.0.1", ports[k], { timeout_ms = 500 })
            if c then c:close() end
            assert.is_nil(c, k .. " still listening")
        end
        return code, out .. err
    end

    it("names an SMTP sink that cannot listen, stops what it started and fails", function()
        local code, out = start_with_port_taken(ports.mail)
        assert.equal(1, code)
        assert.matches("%[run%] the SMTP sink did not start on 127%.0%.0%.1:" .. ports.mail, out)
        assert.is_nil(out:find("chathost is up", 1, true))
    end)

    it("names a role that dies at start-up, stops what it started and fails", function()
        local code, out = start_with_port_taken(ports.c2)
        assert.equal(1, code)
        assert.matches("%[chat2%][^\n]*cannot listen", out)
        assert.matches("%[run%] chat2 did not start %(exit status 2", out)
        assert.is_nil(out:find("chathost is up", 1, true))
    end)

    it("stops everything when its terminal closes (SIGHUP reloads only while it has one)", function()
        local term = client_tmux.start()
        -- its output to a file, so only the terminal's going tells it to stop (writes to a
        -- closed terminal fail, and would end it anyway); the tmux server's environment is
        -- this harness's
        local log = dir .. "/terminal.log"
        local argv = { "sh", "-c", 'exec "$@" >"$0" 2>&1', log, "env" }
        for k, v in pairs(env) do
            if v == false then argv[#argv + 1] = "-u" argv[#argv + 1] = k end
        end
        for k, v in pairs(env) do
            if v ~= false then argv[#argv + 1] = k .. "=" .. v end
        end
        argv[#argv + 1] = host.root .. "/tools/run.sh"
        local ok, err = pcall(function()
            term:open("run", argv)
            assert(util.wait_until(function()
                return (host.fs.read(log) or ""):find("Ctrl-C stops everything", 1, true)
            end, 60000, "the system up in a terminal"))
        end)
        term:kill()
        assert(ok, err)
        assert(util.wait_until(function()
            for _, k in ipairs({ "redis", "mysql", "mail", "gate", "verify", "status", "c1", "c2" }) do
                local c = host.tcp.connect("127.0.0.1", ports[k], { timeout_ms = 500 })
                if c then c:close() return false end
            end
            return true
        end, 30000, "every process to stop"))
    end)
end)

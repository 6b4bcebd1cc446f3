-- `make run TLS=1` (tools/run.sh with CHATHOST_RUN_TLS=1): the system comes up with the TLS
-- proxy in front (a self-signed certificate made in the run's folder), prints the https://
-- and wss:// addresses, serves the web client over https, and Ctrl-C stops the proxy with
-- the rest. On free ports in a folder of its own, as make_run_spec. Skipped, saying why,
-- where nginx (with its stream module) is missing.
local host = require "host"
local roles = require "helpers.roles"
local make_run = require "helpers.make_run"
local tls = require "helpers.tls_proxy"

local ok, why = tls.probe()
if not ok then
    io.stderr:write(spec_file, ": SKIPPED: nginx unavailable: ", why, "\n")
    pending("make run TLS=1: skipped, nginx unavailable: " .. why)
    return
end

describe("make run TLS=1", function()
    local dir, proc, ports
    timeout(90000) -- a whole system (MariaDB's first start included), as make_run_spec

    setup(function()
        dir = assert(host.fs.mkdtemp("makeruntls"))
        ports = {}
        for _, k in ipairs({ "redis", "mysql", "mail", "gate", "verify", "status", "c1", "c1rpc",
            "c1ws", "res", "reshttp", "pgate", "pc1", "pc1ws", "pres", "preshttp" }) do
            ports[k] = roles.free_port()
        end
        assert(host.fs.write(dir .. "/config.lua", "return " .. roles.serialize {
            scripts = { dir = host.root .. "/scripts" }, migrations = { dir = host.root .. "/sql" },
            redis = { port = ports.redis }, mysql = { port = ports.mysql },
            mail = { url = "smtp://127.0.0.1:" .. ports.mail },
            gate = { port = ports.gate, admin_port = 0, web_dir = host.root .. "/web" },
            verify = { port = ports.verify, admin_port = 0 },
            status = { port = ports.status, admin_port = 0 },
            resource = { port = ports.res, http_port = ports.reshttp, admin_port = 0,
                public_port = ports.pres, public_http_port = ports.preshttp },
            chat = { instances = { chat1 = { port = ports.c1, rpc_port = ports.c1rpc, admin_port = 0,
                ws_port = ports.c1ws, public_port = ports.pc1, public_ws_port = ports.pc1ws } } },
            tls_proxy = { gate_port = ports.pgate },
        }))
        proc = make_run.start(make_run.env(dir, { CHATHOST_RUN_TLS = "1" }))
    end)

    teardown(function()
        make_run.stop(proc)
        host.fs.rmtree(dir)
    end)

    it("prints the https and wss addresses clients are told", function()
        local out, err = proc:output()
        assert.falsy(proc.exited, err)
        assert.matches("self%-signed certificate for 127%.0%.0%.1", out)
        assert.matches("tls_proxy: up %(pid %d+%)", out)
        assert.matches("web client and gate https://127%.0%.0%.1:" .. ports.pgate .. "/", out)
        assert.matches("chat1 TLS frames 127%.0%.0%.1:" .. ports.pc1 .. ", wss://127%.0%.0%.1:"
            .. ports.pc1ws .. "/", out)
        assert.matches("resource TLS channel 127%.0%.0%.1:" .. ports.pres
            .. ", downloads https://127%.0%.0%.1:" .. ports.preshttp, out)
    end)

    it("serves the web client over https with the certificate it made", function()
        local r = assert(host.proc.run({ "/usr/bin/python3", host.root .. "/tests/helpers/tls_client.py",
            "https", dir .. "/run/tls/cert.pem", "https://127.0.0.1:" .. ports.pgate .. "/" }))
        assert.equal(0, r.code, r.stderr)
        local got = assert(host.json.decode(r.stdout))
        assert.equal(200, got.status)
        assert.truthy(got.body:find("<html", 1, true), got.body)
    end)

    it("stops the proxy with everything on Ctrl-C", function()
        local pid = tonumber(assert(host.fs.read(dir .. "/run/tls/nginx.pid")):match("%d+"))
        assert(proc:kill("INT"))
        assert.equal(0, proc:wait(30000))
        for _, k in ipairs({ "pgate", "pc1", "pc1ws", "pres", "preshttp", "gate" }) do
            local c = host.tcp.connect("127.0.0.1", ports[k], { timeout_ms = 500 })
            if c then c:close() end
            assert.is_nil(c, k .. " still listening")
        end
        local r = assert(host.proc.run({ "kill", "-0", tostring(pid) }))
        assert.are_not.equal(0, r.code, "nginx " .. pid .. " still running")
    end)
end)

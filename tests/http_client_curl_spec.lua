-- host.http.request on libcurl: https with certificate verification against real TLS
-- servers (tests/helpers/tls_server.py, certificates made by the openssl command line), and
-- every http_client limit at its boundary: the keep-alive pool (total, per host, waiting),
-- the connect timeout, the response size and the redirects.
local host = require "host"
local tls = require "helpers.tls"
local util = require "helpers.util"

-- The config's http_client settings, to put back after each test that changes them.
local DEFAULTS = host.config_copy().http_client
DEFAULTS.ca_file = DEFAULTS.ca_file or false
DEFAULTS.insecure = DEFAULTS.insecure or false

-- Runs the requests (option tables) at once, each in a task: -> their {res, err} in order.
local function at_once(requests)
    local tasks = {}
    for i, req in ipairs(requests) do
        tasks[i] = host.spawn(function() return host.http.request(req) end)
    end
    local out = {}
    for i, t in ipairs(tasks) do
        local ok, res, err = t:wait(10000)
        assert(ok, res)
        out[i] = { res = res, err = err }
    end
    return out
end

describe("http client on libcurl", function()
    local dir, ca, other_ca, cert, server, base

    -- The TCP connections server has accepted so far (the asking one included).
    local function connections(srv)
        local r = assert(host.http.request { url = "https://127.0.0.1:" .. srv.port .. "/conns",
            ca_file = ca.pem })
        return host.json.decode(r.body).connections
    end

    local function get(path, opts)
        local req = { url = base .. path, ca_file = ca.pem }
        for k, v in pairs(opts or {}) do req[k] = v end
        return host.http.request(req)
    end

    setup(function()
        dir = assert(host.fs.mkdtemp("http_curl"))
        ca, other_ca = tls.ca(dir, "ca"), tls.ca(dir, "other")
        cert = tls.cert(dir, ca, "server")
        server = tls.server(cert)
        base = "https://127.0.0.1:" .. server.port
    end)

    teardown(function()
        server.stop()
        host.fs.rmtree(dir)
    end)

    after_each(function() host.http.configure_client(DEFAULTS) end)

    describe("https", function()
        it("verifies the server's certificate against the call's ca_file", function()
            local r = assert(get("/hello"))
            assert.equal(200, r.status)
            assert.same({ hello = "world" }, host.json.decode(r.body))
            local by_name = assert(host.http.request { url = "https://localhost:" .. server.port
                .. "/hello", ca_file = ca.pem })
            assert.equal(200, by_name.status)
        end)

        it("resolves host names, and says when one does not resolve", function()
            local r, err = host.http.request { url = "https://no-such-host.invalid/",
                timeout_ms = 5000 }
            assert.is_nil(r)
            assert.matches("^cannot resolve: .*no%-such%-host%.invalid", err)
        end)

        it("POSTs a body and reads it back", function()
            local body = ("z"):rep(100000)
            local r = assert(get("/echo", { method = "POST", body = body,
                headers = { ["Content-Type"] = "text/plain" } }))
            assert.equal(body, r.body)
            assert.equal("text/plain", r.headers["content-type"])
        end)

        it("refuses a certificate no trusted CA signed, naming the cause", function()
            for _, ca_file in ipairs({ false, other_ca.pem }) do
                local r, err = host.http.request { url = base .. "/hello",
                    ca_file = ca_file or nil }
                assert.is_nil(r)
                assert.matches("^tls: certificate problem: ", err)
            end
        end)

        it("refuses a certificate made out to another name", function()
            local wrong = tls.server(tls.cert(dir, ca, "elsewhere", "DNS:other.example"))
            local r, err = host.http.request { url = "https://127.0.0.1:" .. wrong.port .. "/hello",
                ca_file = ca.pem }
            wrong.stop()
            assert.is_nil(r)
            assert.matches("^tls: .*127%.0%.0%.1", err)
        end)

        it("says when the ca_file cannot be read", function()
            local r, err = get("/hello", { ca_file = dir .. "/missing.pem" })
            assert.is_nil(r)
            assert.matches("^tls: .*missing%.pem", err)
        end)

        it("takes http_client.ca_file for calls that name none", function()
            host.http.configure_client { ca_file = ca.pem }
            local r = assert(host.http.request { url = base .. "/hello" })
            assert.equal(200, r.status)
        end)

        it("checks nothing with insecure = true", function()
            local r, err = host.http.request { url = base .. "/hello" }
            assert.is_nil(r, "verified before insecure")
            assert.matches("^tls: ", err)
            host.http.configure_client { insecure = true }
            assert.equal(200, assert(host.http.request { url = base .. "/hello" }).status)
        end)
    end)

    it("goes through the proxy https_proxy names, except to hosts no_proxy names", function()
        local proxy = tls.server("proxy")
        local script = dir .. "/get.lua"
        assert(host.fs.write(script, [[
local host = require "host"
local url, ca_file = ...
local r, err = host.http.request { url = url, ca_file = ca_file, timeout_ms = 5000 }
io.stdout:write(r and tostring(r.status) or err)
]]))
        local env = { https_proxy = "http://127.0.0.1:" .. proxy.port, no_proxy = false,
            NO_PROXY = false, HTTPS_PROXY = false, all_proxy = false, ALL_PROXY = false }
        local function run()
            return assert(host.proc.run({ util.bin(), "exec", script, base .. "/hello", ca.pem },
                { env = env, timeout_ms = 10000 }))
        end
        local function tunnels()
            local _, n = proxy.proc:output():gsub("\nCONNECT 127%.0%.0%.1:" .. server.port
                .. "\n", "")
            return n
        end
        local r = run()
        assert.equal("200", r.stdout, r.stderr)
        assert.equal(1, tunnels())
        env.no_proxy = "127.0.0.1"
        r = run()
        proxy.stop()
        assert.equal("200", r.stdout, r.stderr)
        assert.equal(1, tunnels())
    end)

    describe("keep-alive pool", function()
        it("reuses one TLS connection for requests in sequence", function()
            local srv = tls.server(cert)
            for _ = 1, 3 do assert(host.http.request { url = "https://127.0.0.1:" .. srv.port ..
                "/hello", ca_file = ca.pem }) end
            assert.equal(1, connections(srv))
            srv.stop()
        end)

        it("keeps its sockets from child processes", function()
            assert(get("/hello")) -- a pooled connection is open now
            local r = assert(host.proc.run({ "sh", "-c", "ls /proc/$$/fd" }))
            local fds = {}
            for fd in r.stdout:gmatch("%d+") do fds[#fds + 1] = tonumber(fd) end
            -- 0..2, and the descriptor the shell's ls reads the folder with
            assert.truthy(#fds <= 4, r.stdout)
        end)

        it("does not reuse a connection idle longer than idle_timeout_s", function()
            local srv = tls.server(cert)
            local url = "https://127.0.0.1:" .. srv.port .. "/hello"
            host.http.configure_client { idle_timeout_s = 1 }
            assert(host.http.request { url = url, ca_file = ca.pem })
            host.timer.sleep(2100) -- libcurl counts whole seconds: idle 2 s is more than 1
            assert(host.http.request { url = url, ca_file = ca.pem })
            assert.equal(2, connections(srv))
            srv.stop()
        end)

        it("opens at most max_host_connections to one host; more requests wait for one", function()
            for _, max in ipairs({ 1, 2 }) do
                local srv = tls.server(cert)
                host.http.configure_client { max_host_connections = max }
                local url = "https://127.0.0.1:" .. srv.port .. "/slow?ms=200"
                local req = { url = url, ca_file = ca.pem }
                local out = at_once({ req, req })
                for _, o in ipairs(out) do assert.equal(200, assert(o.res, o.err).status) end
                assert.equal(max, connections(srv))
                srv.stop()
            end
        end)

        it("refuses with busy beyond max_total_connections + max_waiting", function()
            host.http.configure_client { max_total_connections = 1, max_host_connections = 1,
                max_waiting = 1 }
            local req = { url = base .. "/slow?ms=200", ca_file = ca.pem }
            local out = at_once({ req, req, req })
            assert.equal(200, assert(out[1].res, out[1].err).status)
            assert.equal(200, assert(out[2].res, out[2].err).status)
            assert.is_nil(out[3].res)
            assert.equal("busy", out[3].err)
            assert.equal(0, host.http.client_stats().in_flight)
        end)
    end)

    describe("limits", function()
        it("gives up a handshake that does not finish in connect_timeout_ms", function()
            local stall = tls.server("stall")
            host.http.configure_client { connect_timeout_ms = 200 }
            local r, err = host.http.request { url = "https://127.0.0.1:" .. stall.port .. "/",
                timeout_ms = 5000 }
            stall.stop()
            assert.is_nil(r)
            assert.equal("connect timeout (200 ms)", err)
        end)

        it("refuses settings below their least value", function()
            assert.has_error(function()
                host.http.configure_client { max_total_connections = 0 }
            end, "host.http.configure_client: max_total_connections must be at least 1")
            assert.has_error(function() host.http.configure_client { connect_timeout_ms = 0 } end)
            assert.has_error(function() host.http.configure_client { max_waiting = -1 } end)
            for _, t in ipairs { 0, -1 } do -- a request's own deadline too
                assert.has_error(function() host.http.request { url = "http://127.0.0.1:1/", timeout_ms = t } end)
            end
        end)

        it("takes a body of max_response_bytes and refuses one byte more", function()
            host.http.configure_client { max_response_bytes = 1000 }
            local r = assert(get("/big?n=1000"))
            assert.equal(1000, #r.body)
            local r2, err = get("/big?n=1001")
            assert.is_nil(r2)
            assert.equal("response too large (over 1000 bytes)", err)
        end)

        it("follows max_redirects redirects and refuses one more", function()
            host.http.configure_client { max_redirects = 2 }
            local r = assert(get("/redirect?n=2"))
            assert.equal(200, r.status)
            assert.equal("arrived", r.body)
            assert.is_nil(r.headers.location) -- the final response's headers only
            local r2, err = get("/redirect?n=3")
            assert.is_nil(r2)
            assert.equal("too many redirects (more than 2)", err)
        end)

        it("answers a redirect itself with max_redirects = 0", function()
            host.http.configure_client { max_redirects = 0 }
            local r = assert(get("/redirect?n=1"))
            assert.equal(302, r.status)
            assert.equal("/redirect?n=0", r.headers.location)
        end)

        it("never follows a redirect from https to http, and follows http to https", function()
            local plain = tls.server("plain")
            local r, err = get("/redirect?to=http://127.0.0.1:" .. plain.port .. "/hello")
            assert.is_nil(r)
            assert.equal("redirect refused: from https only to https", err)
            local up = assert(host.http.request { url = "http://127.0.0.1:" .. plain.port ..
                "/redirect?to=" .. base .. "/hello", ca_file = ca.pem })
            plain.stop()
            assert.equal(200, up.status)
            assert.same({ hello = "world" }, host.json.decode(up.body))
        end)
    end)
end)

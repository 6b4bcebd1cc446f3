-- The gate serves the web client's static files (gate.web_dir): GET / is index.html, GET
-- /web/<name> a file of the folder with its content type and caching headers, and nothing
-- outside the folder whatever the path says (docs/protocol.md §3.6).
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"

local function start_gate(gate_opts)
    return roles.start { role = "gate", ready = "HTTP listening", config = function(port)
        local g = { host = "127.0.0.1", port = port, admin_port = 0 }
        for k, v in pairs(gate_opts) do g[k] = v end
        return { gate = g }
    end }
end

local function raw(port, request)
    local c = assert(host.tcp.connect("127.0.0.1", port))
    assert(c:send(request))
    local out = c:read_all(5000)
    c:close()
    return out
end

describe("gate web client files", function()
    local dir, gate

    setup(function()
        dir = assert(host.fs.mkdtemp("webdir"))
        assert(host.fs.mkdir(dir .. "/web"))
        assert(host.fs.mkdir(dir .. "/web/sub"))
        assert(host.fs.write(dir .. "/web/index.html", "<!doctype html><p>index</p>"))
        assert(host.fs.write(dir .. "/web/app.js", "export const x = 1;\n"))
        assert(host.fs.write(dir .. "/web/style.css", "p { color: red }"))
        assert(host.fs.write(dir .. "/web/notes.txt", "a type the gate does not serve"))
        assert(host.fs.write(dir .. "/web/.hidden.js", "hidden"))
        assert(host.fs.write(dir .. "/web/sub/deep.js", "deep"))
        assert(host.fs.write(dir .. "/secret.js", "outside the folder"))
        gate = start_gate { web_dir = dir .. "/web" }
    end)

    teardown(function()
        assert.equal(0, gate:stop())
        host.fs.rmtree(dir)
    end)

    it("serves index.html at / with no-cache and the page's security headers", function()
        local res = assert(http.get(gate.port, "/"))
        assert.equal(200, res.status)
        assert.equal("<!doctype html><p>index</p>", res.body)
        assert.equal("text/html; charset=utf-8", res.headers["content-type"])
        assert.equal("no-cache", res.headers["cache-control"])
        assert.equal("nosniff", res.headers["x-content-type-options"])
        assert.truthy(res.headers["content-security-policy"]:find("default-src 'self'", 1, true))
    end)

    it("serves the folder's files by type, kept web_max_age_s (300 by default)", function()
        local js = assert(http.get(gate.port, "/web/app.js"))
        assert.equal(200, js.status)
        assert.equal("export const x = 1;\n", js.body)
        assert.equal("text/javascript; charset=utf-8", js.headers["content-type"])
        assert.equal("public, max-age=300", js.headers["cache-control"])
        local css = assert(http.get(gate.port, "/web/style.css"))
        assert.equal("text/css; charset=utf-8", css.headers["content-type"])
        local head = raw(gate.port, "HEAD /web/app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.truthy(head:find("^HTTP/1%.1 200"))
        assert.truthy(head:find("\r\n\r\n$"), "a HEAD answer has no body")
    end)

    it("answers 404 for a missing file, an unknown type, a dot-file and a sub-folder", function()
        for _, path in ipairs({ "/web/nope.js", "/web/notes.txt", "/web/.hidden.js", "/web/sub/deep.js",
            "/web/sub", "/web/", "/web/index.html/" }) do
            local res = assert(http.get(gate.port, path))
            assert.equal(404, res.status, path)
        end
    end)

    it("reaches no file outside the folder, however the path is written", function()
        for _, path in ipairs({ "/web/../secret.js", "/web/..%2fsecret.js", "/web/%2e%2e%2fsecret.js",
            "/web/..", "/web/..secret.js", "/web/%2e%2e/secret.js", "/web//secret.js",
            "/web/..\\secret.js", "/web/~/secret.js" }) do
            local out = raw(gate.port, "GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert.falsy(out:find("outside the folder", 1, true), path)
            assert.truthy(out:find("^HTTP/1%.1 4%d%d"), path)
        end
    end)

    it("leaves the account routes as they were", function()
        local res = assert(http.post(gate.port, "/user_login", { email = "nobody" }))
        assert.same({ error = 1016, field = "email" }, res.json)
    end)

    it("hands the client its timings from the config's client section", function()
        local res = assert(http.get(gate.port, "/web/settings.json"))
        assert.equal(200, res.status)
        local s = host.json.decode(res.body)
        assert.equal(host.config.client.heartbeat_ms, s.heartbeat_ms)
        assert.equal(host.config.client.reconnect_attempts, s.reconnect_attempts)
        assert.equal(host.config.client.retry_max_ms, s.retry_max_ms)
    end)
end)

describe("gate web client settings", function()
    it("serves the project's web/, every file no-cache with web_max_age_s = 0", function()
        local gate = start_gate { web_dir = host.root .. "/web", web_max_age_s = 0 }
        local index = assert(http.get(gate.port, "/"))
        local js = assert(http.get(gate.port, "/web/app.js"))
        assert.equal(0, gate:stop())
        assert.equal(200, index.status)
        assert.truthy(index.body:find('src="/web/app.js"', 1, true))
        assert.equal(200, js.status)
        assert.equal("no-cache", js.headers["cache-control"])
    end)

    it("serves no web client with web_dir = \"\"", function()
        local gate = start_gate { web_dir = "" }
        local index = assert(http.get(gate.port, "/"))
        local js = assert(http.get(gate.port, "/web/app.js"))
        local settings = assert(http.get(gate.port, "/web/settings.json"))
        assert.equal(0, gate:stop())
        assert.equal(404, index.status)
        assert.equal(404, js.status)
        assert.equal(404, settings.status)
    end)
end)

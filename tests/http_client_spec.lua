-- host.http.request: the HTTP/1.1 client, against the host's own HTTP server.
local host = require "host"
local util = require "helpers.util"

describe("http client", function()
    local server, base

    setup(function()
        server = assert(host.http.serve { address = "127.0.0.1:0", name = "client_spec",
            idle_timeout_ms = 300, access_log = false, routes = {
                ["GET /hello"] = function(req) return { hello = req.query.name or "world" } end,
                ["POST /echo"] = function(req)
                    return 200, { ["Content-Type"] = "text/plain", ["X-Len"] = tostring(#req.body) }, req.body
                end,
                ["GET /slow"] = function() host.timer.sleep(300) return { late = true } end,
            } })
        base = "http://127.0.0.1:" .. server.port
    end)

    teardown(function() server:close() end)

    it("GETs and POSTs with headers and bodies", function()
        local r = assert(host.http.request { url = base .. "/hello?name=you" })
        assert.equal(200, r.status)
        assert.equal("application/json", r.headers["content-type"])
        assert.same({ hello = "you" }, host.json.decode(r.body))
        local body = ("z"):rep(100000)
        local p = assert(host.http.request { url = base .. "/echo", method = "POST", body = body,
            headers = { ["Content-Type"] = "text/plain" } })
        assert.equal(body, p.body)
        assert.equal("100000", p.headers["x-len"])
    end)

    it("reuses one keep-alive connection for requests in sequence", function()
        for _ = 1, 5 do assert.equal(200, assert(host.http.request { url = base .. "/hello" }).status) end
        assert.equal(1, server.connections)
    end)

    it("sends again on a fresh connection when the server closed the pooled one", function()
        assert(host.http.request { url = base .. "/hello" })
        assert(util.wait_until(function() return server.connections == 0 end, 3000, "the idle close"))
        host.timer.sleep(20)
        local r = assert(host.http.request { url = base .. "/hello" })
        assert.equal(200, r.status)
    end)

    it("gives up after timeout_ms", function()
        local r, err = host.http.request { url = base .. "/slow", timeout_ms = 100 }
        assert.is_nil(r)
        assert.equal("timeout", err)
        host.timer.sleep(350) -- the server's handler finishes its sleep
    end)

    it("reports a refused connection and a bad URL", function()
        local r, err = host.http.request { url = "http://127.0.0.1:1/x" }
        assert.is_nil(r)
        assert.matches("refused", err)
        assert.has_error(function() host.http.request { url = "ftp://x/y" } end, "url must be")
    end)
end)

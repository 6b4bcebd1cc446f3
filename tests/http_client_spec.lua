-- host.http.request: the HTTP/1.1 client, against the host's own HTTP server.
local host = require "host"
local util = require "helpers.util"

-- A peer that answers one request with fixed bytes (argv[1]), then waits for the close.
local RAW_PEER = [[
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.recv(65536)
c.sendall(sys.argv[1].encode("latin-1"))
c.recv(65536)
]]

local function raw_peer(answer)
    local dir = assert(host.fs.mkdtemp("http_client"))
    assert(host.fs.write(dir .. "/peer.py", RAW_PEER))
    local p = assert(host.proc.spawn({ "/usr/bin/python3", dir .. "/peer.py", answer },
        { stdout = "capture" }))
    local port = assert(util.wait_until(function() return tonumber(p:output():match("^(%d+)\n")) end,
        5000, "the peer's port"))
    return p, port, dir
end

describe("http client", function()
    local server, base

    setup(function()
        server = assert(host.http.serve { address = "127.0.0.1:0", name = "client_spec",
            idle_timeout_ms = 300, access_log = false, max_body_bytes = 1048576, routes = {
                ["GET /hello"] = function(req) return { hello = req.query.name or "world" } end,
                ["POST /echo"] = function(req)
                    return 200, { ["Content-Type"] = "text/plain", ["X-Len"] = tostring(#req.body) }, req.body
                end,
                ["GET /slow"] = function() host.timer.sleep(300) return { late = true } end,
                ["GET /header"] = function(req) return { a = req.headers["x-a"] } end,
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

    it("sends a long URL whole", function()
        local name = ("n"):rep(2000)
        local r = assert(host.http.request { url = base .. "/hello?name=" .. name, timeout_ms = 2000 })
        assert.same({ hello = name }, host.json.decode(r.body))
    end)

    it("skips request header entries whose name is not a string", function()
        local r = assert(host.http.request { url = base .. "/header",
            headers = { "X-Listed: 1", ["X-A"] = "named" } })
        assert.same({ a = "named" }, host.json.decode(r.body))
    end)

    it("answers at once when the connect fails before it starts", function()
        local t0 = host.timer.monotonic()
        local r, err = host.http.request { url = "http://255.255.255.255:80/x", timeout_ms = 2000 }
        assert.is_nil(r)
        assert.equal("cannot connect", err)
        assert.truthy(host.timer.monotonic() - t0 < 1000)
    end)

    it("reads a chunked response with trailers", function()
        local p, port, dir = raw_peer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n" ..
            "2\r\nhi\r\n0\r\nX-Trailer: abc\r\n\r\n")
        local r, err = host.http.request { url = "http://127.0.0.1:" .. port .. "/", timeout_ms = 3000 }
        p:kill("KILL")
        p:wait()
        host.fs.rmtree(dir)
        assert(r, err)
        assert.equal("hi", r.body)
        assert.equal("1", r.headers["x-a"])
        assert.equal("abc", r.headers["x-trailer"])
        assert.is_nil(r.headers[""])
    end)

    it("reports a refused connection and a bad URL", function()
        local r, err = host.http.request { url = "http://127.0.0.1:1/x" }
        assert.is_nil(r)
        assert.matches("refused", err)
        assert.has_error(function() host.http.request { url = "ftp://x/y" } end, "url must be")
    end)
end)

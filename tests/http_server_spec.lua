-- The HTTP/1.1 server of the host (host.http.serve): routes, keep-alive, pipelining, and a
-- clear answer for every bad request, over real sockets.
local host = require "host"
local http = require "helpers.http"

local function raw(port, bytes, timeout_ms)
    local c = assert(host.tcp.connect("127.0.0.1", port))
    assert(c:send(bytes))
    local all = c:read_all(timeout_ms or 5000)
    c:close()
    return all
end

local function status_of(response) return tonumber(response:match("^HTTP/1%.1 (%d%d%d)")) end

describe("http server", function()
    local server, port
    local seen

    local routes = {
        ["POST /echo"] = function(req)
            seen = req
            return { error = 0, method = req.method, path = req.path, json = req.json,
                json_error = req.json_error, query = req.query, ua = req.headers["user-agent"],
                peer = req.peer, body_len = #req.body }
        end,
        ["GET /echo"] = function(req) return { error = 0, query = req.query } end,
        ["GET /text"] = function()
            return 201, { ["Content-Type"] = "text/plain", ["X-Extra"] = "yes" }, "hello"
        end,
        ["GET /listed"] = function() -- header lines as an array: not name = value
            return 200, { "X-Listed: 1", ["X-Named"] = "yes" }, "listed"
        end,
        ["GET /crash"] = function() error("handler exploded") end,
        ["GET /slow"] = function() host.timer.sleep(2000) return { error = 0 } end,
        ["GET /nothing"] = function() end,
        ["POST /sleep"] = function(req)
            host.timer.sleep(tonumber(req.json.ms))
            return { error = 0, n = req.json.n }
        end,
    }

    setup(function()
        server = assert(host.http.serve { address = "127.0.0.1:0", name = "spec", routes = routes,
            max_body_bytes = 4096, max_url_bytes = 1024, max_header_bytes = 4096,
            read_timeout_ms = 300, idle_timeout_ms = 500, handler_timeout_ms = 500,
            max_connections = 20, access_log = false })
        port = server.port
    end)

    teardown(function() server:close() end)

    it("answers a JSON route with a JSON body and Content-Length", function()
        local res = assert(http.post(port, "/echo?a=1&b=x%20y", { hello = "world", n = 5 }))
        assert.equal(200, res.status)
        assert.equal("application/json", res.headers["content-type"])
        assert.equal(#res.body, tonumber(res.headers["content-length"]))
        local j = res.json
        assert.same({ hello = "world", n = 5 }, j.json)
        assert.same({ a = "1", b = "x y" }, j.query)
        assert.equal("/echo", j.path)
        assert.equal("POST", j.method)
        assert.equal("127.0.0.1", j.peer)
    end)

    it("gives handlers the headers with lower-case names and the raw body", function()
        local c = http.connect(port)
        local res = assert(c:request("POST", "/echo", "not json", { ["User-Agent"] = "spec/1" }))
        c:close()
        assert.equal("spec/1", res.headers and host.json.decode(res.body).ua)
        assert.equal("not json", seen.body)
        assert.truthy(host.json.decode(res.body).json_error)
    end)

    it("keeps the connection alive across requests", function()
        local c = http.connect(port)
        for i = 1, 5 do
            local res = assert(c:post_json("/echo", { i = i }))
            assert.equal(i, res.json.json.i)
        end
        c:close()
    end)

    it("answers pipelined requests in order", function()
        local c = http.connect(port)
        local bytes = http.format("POST", "/sleep", '{"ms":30,"n":1}') ..
            http.format("POST", "/sleep", '{"ms":1,"n":2}') .. http.format("GET", "/echo?x=3")
        assert(c.conn:send(bytes))
        assert.equal(1, host.json.decode(assert(c:read_response()).body).n)
        assert.equal(2, host.json.decode(assert(c:read_response()).body).n)
        assert.equal("3", host.json.decode(assert(c:read_response()).body).query.x)
        c:close()
    end)

    it("lets a handler choose status, headers and body", function()
        local res = assert(http.get(port, "/text"))
        assert.equal(201, res.status)
        assert.equal("hello", res.body)
        assert.equal("text/plain", res.headers["content-type"])
        assert.equal("yes", res.headers["x-extra"])
    end)

    it("drops response header entries whose name is not a string", function()
        local res = assert(http.get(port, "/listed"))
        assert.equal(200, res.status)
        assert.equal("listed", res.body)
        assert.equal("yes", res.headers["x-named"])
        assert.is_nil(res.headers["x-listed"])
    end)

    it("answers HEAD with headers only, so the next response on the connection parses", function()
        local c = http.connect(port)
        assert(c.conn:send("HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n" .. http.format("GET", "/echo?x=2")))
        local head = assert(c.conn:read_until("\r\n\r\n"))
        assert.matches("^HTTP/1%.1 405", head)
        assert.matches("Content%-Length: %d+", head)
        local nxt = assert(c:read_response())
        assert.equal(200, nxt.status)
        assert.equal("2", host.json.decode(nxt.body).query.x)
        c:close()
    end)

    it("answers 404 and 405 with JSON bodies", function()
        local r404 = assert(http.get(port, "/nope"))
        assert.equal(404, r404.status)
        assert.equal(404, host.json.decode(r404.body).error)
        local r405 = assert(http.get(port, "/crash") and http.post(port, "/text", {}))
        assert.equal(405, r405.status)
        assert.equal("GET", r405.headers.allow)
    end)

    it("answers 500 with error 1019 when a handler raises, and keeps serving", function()
        local res = assert(http.get(port, "/crash"))
        assert.equal(500, res.status)
        assert.equal(1019, host.json.decode(res.body).error)
        local nothing = assert(http.get(port, "/nothing"))
        assert.equal(500, nothing.status)
        assert.equal(200, assert(http.get(port, "/echo")).status)
    end)

    it("answers 504 when a handler takes longer than handler_timeout_ms", function()
        local res = assert(http.get(port, "/slow"))
        assert.equal(504, res.status)
        assert.equal(1019, host.json.decode(res.body).error)
    end)

    it("answers 400 to a malformed request and closes", function()
        local out = raw(port, "POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
        assert.equal(400, status_of(out))
        assert.matches('"error":400', out)
        assert.matches("Connection: close", out)
    end)

    it("answers 505 to an HTTP major version other than 1 and closes", function()
        for _, version in ipairs({ "9.9", "2.0", "0.9" }) do
            local out = raw(port, "GET /echo HTTP/" .. version .. "\r\nHost: x\r\n\r\n")
            assert.equal(505, status_of(out), version)
            assert.matches('"error":505', out)
            assert.matches("Connection: close", out)
        end
        -- a later HTTP/1 minor version is served as 1.1 (RFC 9112 section 2.6)
        assert.equal(200, status_of(raw(port, "GET /echo HTTP/1.9\r\nHost: x\r\nConnection: close\r\n\r\n")))
    end)

    it("answers 400 to an obsolete folded header line", function()
        for _, fold in ipairs({ " b", "\tb" }) do
            local out = raw(port, "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n" .. fold .. "\r\n\r\n")
            assert.equal(400, status_of(out))
            assert.matches("folding", out)
        end
        assert.equal(200, status_of(raw(port, "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a  b\r\n" ..
            "Connection: close\r\n\r\n")))
    end)

    it("answers 400 to chunk data not followed by CRLF", function()
        local head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        for _, chunks in ipairs({ "3\r\nabcXY0\r\n\r\n", "3\r\nabc\rX0\r\n\r\n" }) do
            local out = raw(port, head .. chunks)
            assert.equal(400, status_of(out))
            assert.matches("chunk data not followed by CRLF", out)
        end
        local ok = raw(port, head:gsub("Host: x", "Host: x\r\nConnection: close") ..
            "3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n")
        assert.equal(200, status_of(ok))
        assert.matches('"json":{"a":1}', ok)
    end)

    it("answers 501 to an unknown method", function()
        local out = raw(port, "BREW /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.equal(501, status_of(out))
    end)

    it("answers 413 to a body over the limit without reading it", function()
        local c = assert(host.tcp.connect("127.0.0.1", port))
        assert(c:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n"))
        local res = assert(c:read_all(5000))
        c:close()
        assert.equal(413, status_of(res))
        assert.matches('"error":413', res)
    end)

    it("takes a body of up to 64 KiB without max_body_bytes, the gate's default, and 413 beyond", function()
        local s4 = assert(host.http.serve { address = "127.0.0.1:0", name = "spec4",
            access_log = false, routes = { ["POST /len"] = function(req) return { n = #req.body } end } })
        local function post(n)
            return raw(s4.port, ("POST /len HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                .. "Content-Length: %d\r\n\r\n%s"):format(n, ("b"):rep(n)))
        end
        local ok = post(65536)
        assert.equal(200, status_of(ok))
        assert.matches('{"n":65536}', ok, 1, true)
        assert.equal(413, status_of(post(65537)))
        s4:close()
    end)

    it("caps one address at 256 connections and closes a silent one after 5 s by default", function()
        local s5 = assert(host.http.serve { address = "127.0.0.1:0", name = "spec5",
            access_log = false, routes = {} })
        local held = {}
        for i = 1, 256 do held[i] = assert(host.tcp.connect("127.0.0.1", s5.port)) end
        local extra = assert(host.tcp.connect("127.0.0.1", s5.port))
        assert.equal(429, status_of(extra:read_all(3000) or ""))
        extra:close()
        for i = 2, 256 do held[i]:close() end
        -- held[1] has sent nothing: closed by first_byte_timeout_ms (5 s), not idle_timeout_ms
        local v, err = held[1]:read(1, 8000)
        assert.is_nil(v)
        assert.equal("closed", err)
        held[1]:close()
        s5:close()
    end)

    it("answers 413 to a chunked body that grows over the limit", function()
        local chunk = ("x"):rep(3000)
        local out = raw(port, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
            ("%x\r\n%s\r\n"):format(#chunk, chunk):rep(2) .. "0\r\n\r\n")
        assert.equal(413, status_of(out))
    end)

    it("answers 414 to a 100 KB request line and 431 to oversized headers", function()
        local long = raw(port, "GET /" .. ("a"):rep(100 * 1024) .. " HTTP/1.1\r\n\r\n")
        assert.equal(414, status_of(long))
        local big = raw(port, "GET /echo HTTP/1.1\r\nX-Big: " .. ("b"):rep(8000) .. "\r\n\r\n")
        assert.equal(431, status_of(big))
    end)

    it("answers 408 to a client that sends one byte at a time too slowly, and serves others", function()
        local slow = assert(host.tcp.connect("127.0.0.1", port))
        local request = http.format("GET", "/echo")
        local writer = host.spawn(function()
            for i = 1, #request do
                if not slow:send(request:sub(i, i)) then return end
                host.timer.sleep(100)
            end
        end)
        -- others are served meanwhile
        for _ = 1, 3 do assert.equal(200, assert(http.get(port, "/echo")).status) end
        local out = assert(slow:read_all(3000))
        assert.equal(408, status_of(out))
        slow:close()
        writer:wait()
    end)

    it("closes an idle keep-alive connection after idle_timeout_ms", function()
        local c = http.connect(port)
        assert.equal(200, assert(c:request("GET", "/echo")).status)
        local v, err = c.conn:read(1, 3000)
        assert.is_nil(v)
        assert.equal("closed", err)
        c:close()
    end)

    it("answers a client that announced it is done (half-close) before closing", function()
        local c = assert(host.tcp.connect("127.0.0.1", port))
        assert(c:send(http.format("GET", "/echo")))
        c:shutdown()
        local out = assert(c:read_all())
        assert.equal(200, status_of(out))
        c:close()
    end)

    it("honours Connection: close and HTTP/1.0", function()
        local out = raw(port, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.equal(200, status_of(out))
        assert.matches("Connection: close", out)
        local out10 = raw(port, "GET /echo HTTP/1.0\r\n\r\n")
        assert.equal(200, status_of(out10))
    end)

    it("sends 100 Continue to a client that expects it", function()
        local c = assert(host.tcp.connect("127.0.0.1", port))
        assert(c:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"))
        assert.equal("HTTP/1.1 100 Continue", c:read_until("\r\n\r\n"))
        assert(c:send("{}"))
        local head = c:read_until("\r\n\r\n")
        assert.equal(200, status_of(head))
        c:close()
    end)

    it("answers 503 beyond max_connections and keeps serving after", function()
        local held = {}
        for i = 1, 20 do held[i] = assert(host.tcp.connect("127.0.0.1", port)) end
        local extra = assert(host.tcp.connect("127.0.0.1", port))
        local out = extra:read_all(3000)
        extra:close()
        assert.equal(503, status_of(out or ""))
        for _, c in ipairs(held) do c:close() end
        assert(require("helpers.util").wait_until(function() return server.connections == 0 end, 3000))
        assert.equal(200, assert(http.get(port, "/echo")).status)
    end)

    it("counts requests by route and status in the metrics", function()
        assert(http.get(port, "/echo"))
        local text = host.metrics.render()
        assert.matches('chathost_http_requests_total{server="spec",route="GET /echo",status="200"} %d+', text)
        assert.matches('chathost_http_request_duration_seconds_bucket{server="spec",route="GET /echo",le="0.005"}', text)
    end)

    it("times an answer to a bad request from when the request came, not from boot", function()
        local s3 = assert(host.http.serve { address = "127.0.0.1:0", name = "spec3",
            access_log = false, routes = {} })
        assert.equal(400, status_of(raw(s3.port, "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n")))
        s3:close()
        local sum = host.metrics.render():match(
            'chathost_http_request_duration_seconds_sum{server="spec3",route="unmatched"} (%S+)')
        assert.is_not_nil(sum)
        assert.is_true(tonumber(sum) < 5, "observed " .. sum .. " s") -- a stale start gives the uptime
    end)

    it("frees a closed server only after its last connection is closed", function()
        -- An idle connection's timeout closes it, and in the same loop turn the server is
        -- closed and collected: the server must wait for the connection's handles. Counted
        -- as libuv's test-tcp-close.c does: every TCP handle is closed in the end.
        local util = require "helpers.util"
        local function tcp() return host.stats().handles.tcp or 0 end
        assert(util.wait_until(function() return server.connections == 0 end, 3000))
        -- the count once earlier tests' connections have finished closing
        local before = util.steady(tcp, "a steady handle count")
        -- a connection that sends nothing is closed by the first-byte deadline
        local s2 = assert(host.http.serve { address = "127.0.0.1:0", name = "spec2",
            idle_timeout_ms = 100, first_byte_timeout_ms = 100, access_log = false, routes = {} })
        local c = assert(host.tcp.connect("127.0.0.1", s2.port))
        assert(util.wait_until(function() return s2.connections == 1 end, 1000, "the accept"))
        -- the listener, the server's end, the client's end
        assert(util.wait_until(function() return tcp() == before + 3 end, 2000, "3 handles"))
        local closer = host.spawn(function()
            host.timer.sleep(150)
            s2:close()
            s2 = nil
            collectgarbage()
            collectgarbage()
        end)
        local t0 = host.timer.monotonic()
        while host.timer.monotonic() - t0 < 300 do end -- both timers fall due in one turn
        assert.is_true(closer:wait(1000))
        -- the listener and the server's end of the connection are closed; the client sees it
        assert(util.wait_until(function() return tcp() == before + 1 end, 2000, "the server's handles"))
        local v, err = c:read(1, 1000)
        assert.is_nil(v)
        assert.equal("closed", err)
        c:close()
        assert(util.wait_until(function() return tcp() == before end, 2000, "the client's handle"))
    end)

    it("refuses a second server on a port in use", function()
        local s2, err = host.http.serve { address = "127.0.0.1:" .. port, routes = {} }
        assert.is_nil(s2)
        assert.matches("cannot listen on 127%.0%.0%.1:%d+: Address already in use", err)
    end)

    it("refuses an address whose port is not a number from 0 to 65535", function()
        for _, address in ipairs { "127.0.0.1:80x", "127.0.0.1:abc", "127.0.0.1:", "127.0.0.1:65536",
            "127.0.0.1:-1" } do
            local s2, err = host.http.serve { address = address, routes = {} }
            assert.is_nil(s2, address)
            assert.equal("cannot listen on " .. address .. ": Invalid argument", err)
        end
    end)

    -- the socket is counted here; the memory by LeakSanitizer under make asan
    it("raises on a bad option before it opens a socket or allocates", function()
        local function fds() return #assert(host.fs.list("/proc/self/fd")) end
        local before = fds()
        for _ = 1, 3 do
            local ok, err = pcall(host.http.serve, { address = "127.0.0.1:0", routes = {},
                max_connections = "many" })
            assert.is_false(ok)
            assert.matches("number expected", err)
        end
        assert.equal(before, fds())
    end)
end)

-- File responses of the HTTP server (req:send_file): the whole file or a Range of it
-- streamed 64 KiB at a time over a real socket, bounded memory whatever the file size and
-- the reader's speed, keep-alive and pipelining intact, and a file that fails mid-stream
-- closing the connection.
local host = require "host"
local http = require "helpers.http"
local util = require "helpers.util"

-- n bytes that differ at every offset (a shifted or repeated chunk would show)
local function pattern(n)
    local parts, i = {}, 0
    while i < n do
        local line = ("%010d|"):format(i)
        parts[#parts + 1] = line
        i = i + #line
    end
    return table.concat(parts):sub(1, n)
end

describe("host.http.parse_range", function()
    local parse = host.http.parse_range

    it("reads bytes=a-b, a- and -n against the size", function()
        assert.same({ 0, 10 }, { parse("bytes=0-9", 100) })
        assert.same({ 90, 10 }, { parse("bytes=90-", 100) })
        assert.same({ 93, 7 }, { parse("bytes=-7", 100) })
        assert.same({ 0, 100 }, { parse("bytes=-500", 100) }) -- more than there is: all
        assert.same({ 50, 50 }, { parse("bytes=50-100000", 100) }) -- cut at the end
        assert.same({ 99, 1 }, { parse("bytes = 99-99", 100) })
    end)

    it("finds ranges that start past the end unsatisfiable", function()
        assert.equal("unsatisfiable", parse("bytes=100-", 100))
        assert.equal("unsatisfiable", parse("bytes=100-200", 100))
        assert.equal("unsatisfiable", parse("bytes=-0", 100))
        assert.equal("unsatisfiable", parse("bytes=0-", 0))
        assert.equal("unsatisfiable", parse("bytes=-5", 0))
    end)

    it("ignores what it does not serve: no header, other units, lists, malformed ranges", function()
        for _, h in ipairs({ "items=0-1", "bytes=0-1,5-6", "bytes=5-1", "bytes=-", "bytes=a-b",
            "bytes=1-2-3", "0-9", "" }) do
            assert.is_nil(parse(h, 100), h)
        end
        assert.is_nil(parse(nil, 100))
    end)
end)

describe("http file responses", function()
    local server, port, dir, small, big
    local SMALL = pattern(200000) -- a few chunks, the last one partial

    setup(function()
        dir = host.fs.mkdtemp("httpfile")
        small, big = dir .. "/small", dir .. "/big"
        host.fs.write(small, SMALL)
        host.fs.write(big, pattern(5 * 1048576))
        local routes = {
            ["GET /file"] = function(req)
                local res, err, code = req:send_file(req.query.path or small, {
                    range = req.headers.range, content_type = "image/png",
                    headers = { ["Cache-Control"] = "private" } })
                if not res then return 404, {}, { error = code, message = err } end
                return res
            end,
            ["HEAD /file"] = function(req) return req:send_file(small) end,
            ["GET /part"] = function(req) -- offset and length given by the script
                return req:send_file(small, { offset = 10, length = 5, status = 203 })
            end,
            ["GET /beyond"] = function(req)
                local res, err, code = req:send_file(small, { offset = 199999, length = 2 })
                return 500, {}, { err = err, code = code, res = res ~= nil }
            end,
            ["GET /ping"] = function() return { pong = true } end,
        }
        server = assert(host.http.serve { address = "127.0.0.1:0", routes = routes,
            name = "filespec", read_timeout_ms = 10000 })
        port = server.port
    end)

    teardown(function()
        server:close()
        host.fs.rmtree(dir)
    end)

    it("sends a whole file with its length and type, and keeps the connection", function()
        local open_before = host.file.stats().open
        local c = http.connect(port)
        local r = assert(c:request("GET", "/file"))
        assert.equal(200, r.status)
        assert.equal("200000", r.headers["content-length"])
        assert.equal("image/png", r.headers["content-type"])
        assert.equal("private", r.headers["cache-control"])
        assert.equal(SMALL, r.body)
        assert.is_nil(r.headers["connection"])
        -- the same connection serves the next request
        assert.same({ pong = true }, host.json.decode(assert(c:request("GET", "/ping")).body))
        c:close()
        assert.equal(0, server.file_streams.active)
        assert(util.wait_until(function() return host.file.stats().open == open_before end, 5000,
            "the file closed")) -- by the server, not by a garbage collection
    end)

    it("answers pipelined requests after a file in order", function()
        local c = http.connect(port)
        assert(c.conn:send(http.format("GET", "/file") .. http.format("GET", "/part")
            .. http.format("GET", "/ping")))
        local a, b, p = assert(c:read_response()), assert(c:read_response()), assert(c:read_response())
        assert.equal(SMALL, a.body)
        assert.equal(203, b.status)
        assert.equal(SMALL:sub(11, 15), b.body)
        assert.equal('{"pong":true}', p.body)
        c:close()
    end)

    it("answers a Range with 206 and Content-Range", function()
        local c = http.connect(port)
        local cases = {
            { "bytes=0-9", 0, 9 }, { "bytes=199990-", 199990, 199999 }, { "bytes=-7", 199993, 199999 },
            { "bytes=65530-131080", 65530, 131080 }, -- across chunk boundaries
            { "bytes=150000-999999", 150000, 199999 },
        }
        for _, case in ipairs(cases) do
            local r = assert(c:request("GET", "/file", nil, { Range = case[1] }))
            assert.equal(206, r.status, case[1])
            assert.equal(("bytes %d-%d/200000"):format(case[2], case[3]), r.headers["content-range"])
            assert.equal(SMALL:sub(case[2] + 1, case[3] + 1), r.body)
        end
        c:close()
    end)

    it("answers an unsatisfiable Range with 416, and ignores one it does not serve", function()
        local c = http.connect(port)
        local r = assert(c:request("GET", "/file", nil, { Range = "bytes=200000-" }))
        assert.equal(416, r.status)
        assert.equal("bytes */200000", r.headers["content-range"])
        assert.equal("0", r.headers["content-length"])
        r = assert(c:request("GET", "/file", nil, { Range = "bytes=0-1,5-6" }))
        assert.equal(200, r.status)
        assert.equal(SMALL, r.body)
        c:close()
    end)

    it("answers HEAD with the headers alone", function()
        local c = http.connect(port)
        assert(c.conn:send(http.format("HEAD", "/file")))
        local head = assert(c.conn:read_until("\r\n\r\n"))
        assert.matches("Content%-Length: 200000", head)
        assert.same({ pong = true }, host.json.decode(assert(c:request("GET", "/ping")).body))
        c:close()
    end)

    it("lets the handler answer a missing file or a range beyond it", function()
        local c = http.connect(port)
        local r = assert(c:request("GET", "/file?path=" .. dir .. "/none"))
        assert.equal(404, r.status)
        assert.equal("ENOENT", host.json.decode(r.body).error)
        r = assert(c:request("GET", "/beyond"))
        assert.same({ code = "ERANGE", res = false, err = small .. ": bytes 199999..200001 are beyond its 200000 bytes" },
            host.json.decode(r.body))
        c:close()
    end)

    it("sends 5 MB to a slow reader holding one 64 KiB buffer, and closes the file", function()
        local open_before = host.file.stats().open
        -- a client whose socket reads at most 64 KiB ahead of the script
        local conn = assert(host.tcp.connect("127.0.0.1", port, { timeout_ms = 10000, max_buffer = 65536 }))
        assert(conn:send(http.format("GET", "/file?path=" .. big)))
        assert(util.wait_until(function() return server.file_streams.active == 1 end, 5000, "the stream"))
        local head = assert(conn:read_until("\r\n\r\n"))
        assert.matches("Content%-Length: 5242880", head)
        local parts, got = {}, 0
        while got < 5242880 do
            local chunk = assert(conn:read(65536))
            parts[#parts + 1] = chunk
            got = got + #chunk
        end
        assert.equal(host.fs.read(big), table.concat(parts))
        conn:close()
        assert(util.wait_until(function() return server.file_streams.active == 0 end, 5000, "the end"))
        local st = server.file_streams
        assert.equal(0, st.buffer_bytes)
        assert.is_true(st.peak_buffer_bytes > 65536 and st.peak_buffer_bytes < 70000,
            "peak " .. st.peak_buffer_bytes)
        assert(util.wait_until(function() return host.file.stats().open == open_before end, 5000,
            "the file closed"))
    end)

    it("closes the connection when the file fails after the headers went out", function()
        local huge = dir .. "/huge"
        host.fs.write(huge, ("h"):rep(40 * 1048576)) -- more than the socket buffers hold
        local conn = assert(host.tcp.connect("127.0.0.1", port, { timeout_ms = 10000, max_buffer = 65536 }))
        assert(conn:send(http.format("GET", "/file?path=" .. huge)))
        assert(util.wait_until(function() return server.file_streams.active == 1 end, 5000, "the stream"))
        assert.equal(0, assert(host.proc.run({ "truncate", "-s", "1000000", huge })).code)
        local got, err = 0, nil
        while true do
            local chunk
            chunk, err = conn:read(65536)
            if not chunk then break end
            got = got + #chunk
        end
        assert.equal("closed", err)
        assert.is_true(got < 40 * 1048576, "got " .. got)
        conn:close()
        assert(util.wait_until(function() return server.file_streams.active == 0 end, 5000, "the end"))
        -- the server goes on
        local c = http.connect(port)
        assert.equal(200, assert(c:request("GET", "/ping")).status)
        c:close()
    end)
end)

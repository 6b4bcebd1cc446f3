-- The gate process under hostile or unusual HTTP: each request gets its clear answer and
-- the gate keeps serving everyone else (issue 4's robustness list, against the real role).
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"

local function status_of(response) return tonumber((response or ""):match("^HTTP/1%.1 (%d%d%d)")) end

describe("gate under hostile HTTP", function()
    local gate

    setup(function()
        gate = roles.start { role = "gate", ready = "HTTP listening", config = function(port)
            return { gate = { host = "127.0.0.1", port = port, admin_port = 0,
                read_timeout_ms = 1500, max_body_bytes = 65536 } }
        end }
    end)

    teardown(function() assert.equal(0, gate:stop()) end)

    local function still_serving()
        local res = assert(http.post(gate.port, "/user_login", { email = "nobody" }))
        assert.equal(200, res.status)
        assert.same({ error = 1016, field = "email" }, res.json)
    end

    local function raw(bytes, timeout_ms)
        local c = assert(host.tcp.connect("127.0.0.1", gate.port))
        assert(c:send(bytes))
        local out = c:read_all(timeout_ms or 5000)
        c:close()
        return out
    end

    it("answers malformed JSON and wrong JSON types with 1001", function()
        for _, body in ipairs({ "{not json", "[1,2]", '"str"', '{"email":5,"passwd":"x"}', "[]",
            " \n[ ]", '{"email":"a@b.c","passwd":NaN}' }) do
            local res = assert(http.post(gate.port, "/user_login", body))
            assert.equal(200, res.status)
            assert.equal(1001, res.json.error)
        end
        still_serving()
    end)

    it("answers a 2 MB body with 413", function()
        local res = assert(http.post(gate.port, "/user_login", ("x"):rep(2 * 1024 * 1024)))
        assert.equal(413, res.status)
        assert.equal(413, host.json.decode(res.body).error)
        still_serving()
    end)

    it("answers a 100 KB request line with 414", function()
        assert.equal(414, status_of(raw("POST /" .. ("a"):rep(100 * 1024) .. " HTTP/1.1\r\n\r\n")))
        still_serving()
    end)

    it("answers an unknown method with 501 and a known one on a POST route with 405", function()
        assert.equal(501, status_of(raw("FROB /user_login HTTP/1.1\r\nHost: x\r\n\r\n")))
        local res = assert(http.get(gate.port, "/user_login"))
        assert.equal(405, res.status)
        assert.equal("POST", res.headers.allow)
        still_serving()
    end)

    it("answers 408 to a client sending one byte per second, serving others meanwhile", function()
        local slow = assert(host.tcp.connect("127.0.0.1", gate.port))
        local request = http.format("POST", "/user_login", '{"email":"a@b.c","passwd":"x"}')
        local writer = host.spawn(function()
            for i = 1, #request do
                if not slow:send(request:sub(i, i)) then return end
                host.timer.sleep(1000)
            end
        end)
        host.timer.sleep(200)
        still_serving()
        local out = assert(slow:read_all(5000))
        assert.equal(408, status_of(out))
        slow:close()
        writer:wait()
    end)

    it("answers pipelined requests in order on one connection", function()
        local c = http.connect(gate.port)
        local bodies = { '{"email":"bad"}', "{nope", '{"passwd":"x"}' }
        local bytes = ""
        for _, b in ipairs(bodies) do bytes = bytes .. http.format("POST", "/user_login", b) end
        assert(c.conn:send(bytes))
        local codes = {}
        for i = 1, 3 do codes[i] = host.json.decode(assert(c:read_response()).body).error end
        c:close()
        assert.same({ 1016, 1001, 1016 }, codes)
    end)
end)

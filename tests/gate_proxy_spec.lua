-- gate.trusted_proxies: behind a load balancer every request comes from the proxy's IP, so
-- the per-IP rate limits would lump all users together. A trusted proxy's X-Forwarded-For
-- names the client (the rightmost address that is not a trusted proxy); anyone else's is
-- ignored, so a client cannot pick the identity its failures are counted under.
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"
local redis = host.redis

local CLIENT, OTHER, PROXY = "203.0.113.5", "203.0.113.6", "127.0.0.1"
local LIMIT = 50 -- gate.accounts.login_ip_limit's default

describe("gate login rate limit per client IP", function()
    local trusting, plain

    setup(function()
        trusting = roles.start { role = "gate", config = function(port)
            -- the second proxy written in a non-canonical form: matched all the same
            return { gate = { port = port, admin_port = 0,
                trusted_proxies = { PROXY, "10.9.9.9", "2001:DB8:0:0::7" } } }
        end }
        plain = roles.start { role = "gate", config = function(port)
            return { gate = { port = port, admin_port = 0 } }
        end }
    end)

    teardown(function()
        assert.equal(0, trusting:stop())
        assert.equal(0, plain:stop())
    end)

    local function clear()
        redis.call("DEL", "rate:login_ip:" .. CLIENT, "rate:login_ip:" .. OTHER,
            "rate:login_ip:" .. PROXY, "rate:login_ip:10.9.9.9")
    end

    before_each(function()
        clear()
        -- CLIENT has used up its failed logins
        assert(redis.call("SET", "rate:login_ip:" .. CLIENT, LIMIT, "EX", 900))
    end)

    after_each(clear)

    -- A login that fails (an unknown e-mail) sent to gate with X-Forwarded-For xff (nil:
    -- none; a list: one header line each) -> the decoded reply
    local function login(gate, xff)
        local c = http.connect(gate.port)
        local body = host.json.encode { email = "nobody" .. host.crypto.random_hex(4) .. "@example.com",
            passwd = "wrong1" }
        local lines = { "POST /user_login HTTP/1.1", "Host: 127.0.0.1",
            "Content-Type: application/json", "Content-Length: " .. #body }
        for _, v in ipairs(type(xff) == "table" and xff or { xff }) do
            lines[#lines + 1] = "X-Forwarded-For: " .. v
        end
        assert(c.conn:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. body))
        local res = assert(c:read_response())
        c:close()
        return assert(host.json.safe.decode(res.body), res.body)
    end

    local function counted(ip) return redis.call("GET", "rate:login_ip:" .. ip) end

    it("counts a trusted proxy's requests under the client it names", function()
        local limited = login(trusting, "198.51.100.7, " .. CLIENT)
        assert.equal(1017, limited.error)
        assert.truthy(limited.retry_after > 0 and limited.retry_after <= 900)
        assert.same({ error = 1009 }, login(trusting, OTHER))
        assert.equal("1", counted(OTHER))
        assert.is_nil(counted(PROXY))
    end)

    it("walks past the trusted proxies of a chain, in any header line and form", function()
        assert.equal(1017, login(trusting, CLIENT .. ", 10.9.9.9").error)
        assert.equal(1017, login(trusting, CLIENT .. ",10.9.9.9 , " .. PROXY).error)
        assert.equal(1017, login(trusting, { "198.51.100.7, " .. CLIENT, "10.9.9.9" }).error)
        assert.equal(1017, login(trusting, CLIENT .. ", 2001:db8::7").error)
    end)

    it("counts an address with the port a proxy added under the address", function()
        assert.equal(1017, login(trusting, CLIENT .. ":5678").error)
        assert.equal(1017, login(trusting, CLIENT .. ":5678, [2001:db8::7]:443").error)
        assert.same({ error = 1009 }, login(trusting, OTHER .. ":5678"))
        assert.equal("1", counted(OTHER))
        assert.same({ error = 1009 }, login(trusting, "[2001:DB8::99]:443"))
        assert.equal("1", counted("2001:db8::99"))
        redis.call("DEL", "rate:login_ip:2001:db8::99")
    end)

    it("stops at an entry that is not an address, at the proxy that passed it on", function()
        assert.same({ error = 1009 }, login(trusting, CLIENT .. ", not-an-ip"))
        assert.equal("1", counted(PROXY))
        assert.same({ error = 1009 }, login(trusting, CLIENT .. ", not-an-ip, 10.9.9.9"))
        assert.equal("1", counted("10.9.9.9"))
        assert.same({ error = 1009 }, login(trusting, CLIENT .. ", 010.9.9.9")) -- not canonical
        assert.equal("2", counted(PROXY))
    end)

    it("uses the proxy's own address when it sends no X-Forwarded-For", function()
        assert.same({ error = 1009 }, login(trusting, nil))
        assert.equal("1", counted(PROXY))
    end)

    it("ignores X-Forwarded-For from a peer that is not a trusted proxy", function()
        assert.same({ error = 1009 }, login(plain, CLIENT))
        assert.equal("1", counted(PROXY))
        assert.equal(tostring(LIMIT), counted(CLIENT))
    end)
end)

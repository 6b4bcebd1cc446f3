-- The gate's login limits count failures, not attempts (gate.accounts.login_*): per
-- (e-mail, client IP) and per client IP a hard limit; per e-mail, from any address, only a
-- short backoff, so nobody can lock an account's owner out. Client IPs are presented
-- through X-Forwarded-For from a trusted proxy (127.0.0.1), as in gate_proxy_spec.
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"
local util = require "helpers.util"
local redis, db = host.redis, host.db

local password = dofile(host.root .. "/scripts/lib/password.lua")

-- this spec's limits (the defaults are larger; as by default, an e-mail backs off when
-- one IP used up its failures for it)
local IP_LIMIT, PAIR_LIMIT, EMAIL_LIMIT = 5, 3, 3
local BACKOFF_S, BACKOFF_MAX_S = 2, 8
local PASSWORD = "abc123"

describe("gate login limits", function()
    local status, gate, impatient
    local chat_name = "gatelimits" .. host.crypto.random_hex(3)
    local pwd_hash -- PASSWORD's hash, shared by this spec's accounts
    local n = 0

    local function accounts(port, wait_ms)
        return { gate = { port = port, admin_port = 0, trusted_proxies = { "127.0.0.1" },
            accounts = { login_ip_limit = IP_LIMIT,
                login_email_ip_limit = PAIR_LIMIT, login_email_limit = EMAIL_LIMIT,
                login_email_backoff_s = BACKOFF_S, login_email_backoff_max_s = BACKOFF_MAX_S,
                login_wait_ms = wait_ms } }, status = { port = status.port } }
    end

    setup(function()
        status = roles.start { role = "status", config = function(port)
            return { status = { port = port, admin_port = 0, servers_refresh_ms = 0 } }
        end }
        gate = roles.start { role = "gate", config = function(port)
            return accounts(port, 20000)
        end }
        -- never waits for logins in flight (login_wait_ms = 0)
        impatient = roles.start { role = "gate", config = function(port)
            return accounts(port, 0)
        end }
        redis.call("DEL", "chatservers")
        assert(redis.call("SET", "chatserver_" .. chat_name,
            host.json.encode({ host = "127.0.0.1", port = 18090 }), "EX", 600))
        assert(redis.call("SADD", "chatservers", chat_name))
        pwd_hash = assert(host.crypto.hash_password(PASSWORD))
    end)

    teardown(function()
        redis.call("SREM", "chatservers", chat_name)
        redis.call("DEL", "chatserver_" .. chat_name)
        assert.equal(0, impatient:stop())
        assert.equal(0, gate:stop())
        assert.equal(0, status:stop())
    end)

    -- An address of its own for each test (TEST-NET-2), so counters never carry over.
    local function fresh_ip()
        n = n + 1
        return ("198.51.100.%d"):format(n)
    end

    -- An account with PASSWORD (made directly: registration has limits of its own).
    local function account()
        local id = host.crypto.random_hex(5)
        local email = ("gl_%s@example.com"):format(id)
        assert(db.exec("INSERT INTO user (name, email, pwd_hash, nick) VALUES (?, ?, ?, ?)",
            "gl_" .. id, email, pwd_hash, "gl"))
        return email
    end

    -- A login for email with the clear password, from client IP ip -> the decoded reply
    local function login(email, clear, ip, g)
        local c = http.connect((g or gate).port)
        local body = host.json.encode { email = email, passwd = password.xor(clear) }
        local res = assert(c:request("POST", "/user_login", body, {
            ["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip }))
        c:close()
        assert.equal(200, res.status)
        return assert(host.json.safe.decode(res.body), res.body)
    end

    -- Runs fn(i) for i = 1..count at once -> {error code = how many}
    local function at_once(count, fn)
        local tasks = {}
        for i = 1, count do tasks[i] = host.spawn(function() return fn(i) end) end
        local tally = {}
        for i = 1, count do
            local ok, rsp = tasks[i]:wait()
            assert.is_true(ok, rsp)
            tally[rsp.error] = (tally[rsp.error] or 0) + 1
        end
        return tally
    end

    local function limited(rsp, most)
        assert.equal(1017, rsp.error)
        assert.truthy(rsp.retry_after >= 1 and rsp.retry_after <= most, rsp.retry_after)
        assert.is_nil(rsp.token)
    end

    -- A correct login for email from ip succeeds, at once or after a backoff of BACKOFF_S.
    local function owner_gets_in(email, ip)
        assert(util.wait_until(function()
            local rsp = login(email, PASSWORD, ip)
            if rsp.error ~= 0 then limited(rsp, BACKOFF_S) end
            return rsp.error == 0
        end, (BACKOFF_S + 3) * 1000, "the owner's login"))
    end

    describe("per client IP", function()
        it("lets 20 correct logins from one IP at once all in (login_ip_limit 5)", function()
            local ip = fresh_ip()
            local emails = {}
            for i = 1, 20 do emails[i] = account() end
            assert.same({ [0] = 20 }, at_once(20, function(i)
                return login(emails[i], PASSWORD, ip)
            end))
            assert.equal(0, redis.call("EXISTS", "rate:login_ip:" .. ip))
            assert.equal(0, redis.call("ZCARD", "rate:login_ip_inflight:" .. ip))
        end)

        it("checks no more than login_ip_limit wrong passwords arriving at once", function()
            local ip = fresh_ip()
            assert.same({ [1009] = IP_LIMIT, [1017] = 3 }, at_once(IP_LIMIT + 3, function()
                return login(account(), "wrong1", ip)
            end))
            assert.equal(tostring(IP_LIMIT), redis.call("GET", "rate:login_ip:" .. ip))
        end)

        it("refuses even a correct login from an IP with login_ip_limit failures", function()
            local ip = fresh_ip()
            for _ = 1, IP_LIMIT - 1 do
                assert.same({ error = 1009 }, login(account(), "wrong1", ip))
            end
            local email = account()
            assert.equal(0, login(email, PASSWORD, ip).error) -- successes do not count
            assert.same({ error = 1009 }, login(account(), "wrong1", ip))
            limited(login(email, PASSWORD, ip), 900)
            assert.equal(0, login(email, PASSWORD, fresh_ip()).error)
        end)

        it("answers 1018 when login_wait_ms ends before the logins in flight", function()
            local ip = fresh_ip()
            local email = account()
            local pending = "rate:login_ip_inflight:" .. ip
            local far = (host.now() + 600000)
            for i = 1, IP_LIMIT do assert(redis.call("ZADD", pending, far, "stuck" .. i)) end
            assert(redis.call("EXPIRE", pending, 600))
            assert.same({ error = 1018 }, login(email, PASSWORD, ip, impatient))
            -- one lease fewer (or leases that ended, of a gate that died): in at once
            assert.equal(1, redis.call("ZREM", pending, "stuck1"))
            assert.equal(0, login(email, PASSWORD, ip, impatient).error)
            for i = 2, IP_LIMIT do assert(redis.call("ZADD", pending, 1, "stuck" .. i)) end
            assert.equal(0, login(email, PASSWORD, ip, impatient).error)
            redis.call("DEL", pending)
        end)
    end)

    describe("per e-mail", function()
        it("locks an e-mail out of one IP after login_email_ip_limit failures, not the owner",
            function()
                local email = account()
                local a, b = fresh_ip(), fresh_ip()
                for _ = 1, PAIR_LIMIT do
                    assert.same({ error = 1009 }, login(email, "wrong1", a))
                end
                limited(login(email, PASSWORD, a), 900)
                -- the owner elsewhere: in at once, or after the e-mail's short backoff
                owner_gets_in(email, b)
                limited(login(email, PASSWORD, a), 900)
            end)

        it("only slows an e-mail down once it failed login_email_limit times from any IP",
            function()
                local email = account()
                for _ = 1, EMAIL_LIMIT - 1 do
                    assert.same({ error = 1009 }, login(email, "wrong1", fresh_ip()))
                end
                assert.equal(0, redis.call("EXISTS", "rate:login_backoff:" .. email))
                assert.same({ error = 1009 }, login(email, "wrong1", fresh_ip()))
                local pttl = redis.call("PTTL", "rate:login_backoff:" .. email)
                assert.truthy(pttl > 0 and pttl <= BACKOFF_S * 1000, pttl)
                -- the owner from yet another address waits out the backoff, then gets in
                owner_gets_in(email, fresh_ip())
                assert.equal(0, redis.call("EXISTS", "rate:login_email:" .. email))
            end)

        it("doubles the backoff with each further failure, up to login_email_backoff_max_s",
            function()
                local email = account()
                local backoff = "rate:login_backoff:" .. email
                assert(redis.call("SET", "rate:login_email:" .. email, EMAIL_LIMIT, "EX", 900))
                assert.same({ error = 1009 }, login(email, "wrong1", fresh_ip()))
                local pttl = redis.call("PTTL", backoff)
                assert.truthy(pttl > BACKOFF_S * 1000 and pttl <= 2 * BACKOFF_S * 1000, pttl)
                limited(login(email, PASSWORD, fresh_ip()), 2 * BACKOFF_S)
                assert(redis.call("SET", "rate:login_email:" .. email, 100, "EX", 900))
                redis.call("DEL", backoff)
                assert.same({ error = 1009 }, login(email, "wrong1", fresh_ip()))
                pttl = redis.call("PTTL", backoff)
                assert.truthy(pttl > (BACKOFF_MAX_S - 1) * 1000 and pttl <= BACKOFF_MAX_S * 1000,
                    pttl)
                limited(login(email, PASSWORD, fresh_ip()), BACKOFF_MAX_S)
            end)
    end)
end)

-- host.crypto: argon2id password hashes off the loop with a concurrency cap, and random
-- tokens and codes from the OS's CSPRNG.
local host = require "host"
local util = require "helpers.util"

describe("password hashing", function()
    it("makes argon2id hashes with the configured cost that verify", function()
        local h = assert(host.crypto.hash_password("Passw0rd!"))
        assert.matches("^%$argon2id%$v=19%$m=19456,t=2,p=1%$", h)
        assert.is_true(host.crypto.verify_password(h, "Passw0rd!"))
        assert.is_false(host.crypto.verify_password(h, "passw0rd!"))
        assert.is_false(host.crypto.needs_rehash(h))
    end)

    it("salts: the same password hashes differently each time", function()
        local a = assert(host.crypto.hash_password("same"))
        local b = assert(host.crypto.hash_password("same"))
        assert.are_not.equal(a, b)
    end)

    it("never matches something that is not an argon2id hash", function()
        assert.is_false(host.crypto.verify_password("abc123", "abc123"))
        assert.is_false(host.crypto.verify_password("", ""))
    end)

    it("flags hashes made with other cost parameters for rehashing", function()
        -- an argon2id hash string with m=65536,t=2 (libsodium's INTERACTIVE preset)
        local other = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$" ..
            "wU2t0vZc3wKq4dYkOn0dY0KJx5bX3lO5ZKxXc9yWv2w"
        assert.is_true(host.crypto.needs_rehash(other))
    end)

    it("runs at most crypto.max_concurrent hashes at once and never blocks the loop", function()
        local max_active, done = 0, 0
        for _ = 1, 5 do
            host.spawn(function()
                assert(host.crypto.hash_password("x"))
                done = done + 1
            end)
        end
        local ticks = 0
        while done < 5 do
            local s = host.crypto.stats()
            if s.active > max_active then max_active = s.active end
            host.timer.sleep(1)
            ticks = ticks + 1
        end
        assert.equal(host.config.crypto.max_concurrent, max_active)
        -- the loop kept turning while hashes ran on other threads
        assert.truthy(ticks > 5)
    end)

    it("answers busy when too many hashes wait (crypto.max_waiting)", function()
        local dir = assert(host.fs.mkdtemp("crypto"))
        assert(host.fs.write(dir .. "/config.lua",
            "return { crypto = { max_concurrent = 1, max_waiting = 1 } }"))
        local r = util.chathost({ "test", "-c", dir .. "/config.lua",
            host.root .. "/tests/fixtures/crypto/busy.lua" }, { env = { CHATHOST_LOG_LEVEL = "off" } })
        host.fs.rmtree(dir)
        assert.equal(0, r.code, r.stdout)
        assert.matches("1 passed, 0 failed\n$", r.stdout)
    end)

    it("answers busy to a hash that waited crypto.wait_timeout_ms for a turn", function()
        local dir = assert(host.fs.mkdtemp("crypto"))
        -- one hash at a time, each ~64 MiB and 3 passes: a wait of 10 ms ends first
        assert(host.fs.write(dir .. "/config.lua", "return { crypto = { max_concurrent = 1,"
            .. " max_waiting = 10, wait_timeout_ms = 10, argon2_memlimit_kib = 65536,"
            .. " argon2_opslimit = 3 } }"))
        local r = util.chathost({ "test", "-c", dir .. "/config.lua",
            host.root .. "/tests/fixtures/crypto/wait_timeout.lua" },
            { env = { CHATHOST_LOG_LEVEL = "off" } })
        host.fs.rmtree(dir)
        assert.equal(0, r.code, r.stdout)
        assert.matches("1 passed, 0 failed\n$", r.stdout)
    end)
end)

describe("random values", function()
    it("random_hex gives 2n hex characters, different every time", function()
        local a, b = host.crypto.random_hex(16), host.crypto.random_hex(16)
        assert.matches("^%x+$", a)
        assert.equal(32, #a)
        assert.are_not.equal(a, b)
        assert.has_error(function() host.crypto.random_hex(0) end)
    end)

    it("random_uniform stays in range and covers it", function()
        local seen = {}
        for _ = 1, 2000 do
            local v = host.crypto.random_uniform(10)
            assert.truthy(v >= 0 and v < 10 and v == math.floor(v))
            seen[v] = true
        end
        for v = 0, 9 do assert.truthy(seen[v]) end
    end)

    it("compares secrets in constant time", function()
        assert.is_true(host.crypto.constant_time_equal("abc", "abc"))
        assert.is_false(host.crypto.constant_time_equal("abc", "abd"))
        assert.is_false(host.crypto.constant_time_equal("abc", "abcd"))
    end)
end)

describe("base64", function()
    local crypto = host.crypto

    it("encodes with the original alphabet and padding (RFC 4648 test vectors)", function()
        local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
            fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
        for plain, b64 in pairs(vectors) do
            assert.equal(b64, crypto.base64_encode(plain))
            assert.equal(plain, crypto.base64_decode(b64))
        end
        assert.equal("+/8=", crypto.base64_encode("\251\255")) -- not the URL alphabet
    end)

    it("round-trips every byte value and a 32 KiB chunk", function()
        local all = {}
        for i = 0, 255 do all[#all + 1] = string.char(i) end
        local bytes = table.concat(all)
        assert.equal(bytes, crypto.base64_decode(crypto.base64_encode(bytes)))
        local chunk = bytes:rep(128)
        local b64 = crypto.base64_encode(chunk)
        assert.equal(43692, #b64) -- 4 * ceil(32768 / 3)
        assert.equal(chunk, crypto.base64_decode(b64))
    end)

    it("refuses what is not padded original base64", function()
        for _, bad in ipairs({ "Zg", "Zg=", "Zm9v!", "Zm9v\n", " Zm9v", "Zm9vYg==x", "-_8=",
            "Zm9vYg==Zg==", "=" }) do
            local none, err = crypto.base64_decode(bad)
            assert.is_nil(none, bad)
            assert.equal("invalid base64", err)
        end
    end)

    it("refuses a bad character anywhere in a long string, and bits beyond the last byte", function()
        local good = ("Zm9v"):rep(1000)
        for _, at in ipairs({ 1, 2, 3, 4, 2001, 3998, 4000 }) do
            for _, c in ipairs({ "!", "=", "-", "\0", "\128", "\255" }) do
                local bad = good:sub(1, at - 1) .. c .. good:sub(at + 1)
                assert.is_nil(crypto.base64_decode(bad), at .. " " .. c:byte())
            end
        end
        assert.equal(3000, #crypto.base64_decode(good))
        -- one encoding per byte string: the padding's leftover bits must be zero
        for _, bad in ipairs({ "Zh==", "Zm9=", "Zm9vZh==", "Zm9vZm9=" }) do
            assert.is_nil(crypto.base64_decode(bad), bad)
        end
        assert.equal("fo", crypto.base64_decode("Zm8="))
    end)

    it("refuses every byte outside the alphabet at every position (32 at a time where the CPU has AVX2)", function()
        local A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        local good = (A .. A):sub(1, 96) -- the first 64 decoded 32 at a time, the rest one group at a time
        local plain = assert(crypto.base64_decode(good))
        assert.equal(72, #plain)
        assert.equal(good, crypto.base64_encode(plain))
        local outside = {}
        for b = 0, 255 do
            if not A:find(string.char(b), 1, true) then outside[#outside + 1] = string.char(b) end
        end
        assert.equal(192, #outside)
        for at = 1, #good do
            for _, c in ipairs(outside) do
                local bad = good:sub(1, at - 1) .. c .. good:sub(at + 1)
                if crypto.base64_decode(bad) ~= nil then
                    error(("decoded with byte %d at %d"):format(c:byte(), at))
                end
            end
        end
    end)

    it("matches a reference decoder on random data of every length up to 300", function()
        local A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        local function ref(s) -- a plain Lua encoder, RFC 4648 §4
            local out = {}
            for i = 1, #s, 3 do
                local a, b, c = s:byte(i, i + 2)
                local v = a * 65536 + (b or 0) * 256 + (c or 0)
                local q = {}
                for k = 3, 0, -1 do
                    local d = math.floor(v / 64 ^ k) % 64
                    q[#q + 1] = A:sub(d + 1, d + 1)
                end
                if not b then q[3], q[4] = "=", "=" elseif not c then q[4] = "=" end
                out[#out + 1] = table.concat(q)
            end
            return table.concat(out)
        end
        for n = 0, 300 do
            local t = {}
            for i = 1, n do t[i] = string.char(math.random(0, 255)) end
            local s = table.concat(t)
            assert.equal(ref(s), crypto.base64_encode(s))
            assert.equal(s, crypto.base64_decode(ref(s)))
        end
    end)
end)

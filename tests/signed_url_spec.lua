-- lib.signed_url: the short-lived links to the resource server's HTTP downloads, signed with
-- HMAC-SHA-256 (host.crypto.hmac_sha256) under resource.url_secret (make test exports one):
-- a link verifies until its expiry, and any change to its path, expiry or signature is a
-- bad signature.
local host = require "host"

local signed_url = require "helpers.scripts_lib" "lib.signed_url"

local function parts(signed)
    local path, e, s = signed:match("^([^?]+)%?e=(%d+)&s=(%x+)$")
    assert(path, signed)
    return path, e, s
end

describe("signed URLs", function()
    it("computes HMAC-SHA-256 (RFC 4231 test cases 1 and 2)", function()
        assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            host.crypto.hmac_sha256("Jefe", "what do ya want for nothing?"))
        assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            host.crypto.hmac_sha256(("\11"):rep(20), "Hi There"))
    end)

    it("signs a path that verifies until it expires", function()
        assert.truthy(#signed_url.secret() >= 16)
        local now = os.time()
        local signed, expires = signed_url.sign("/files/42", 300, now)
        assert.equal(now + 300, expires)
        local path, e, s = parts(signed)
        assert.same({ "/files/42", tostring(now + 300), 64 }, { path, e, #s })
        assert.is_true(signed_url.verify(path, e, s))
        assert.is_true(signed_url.verify(path, e, s:upper()))
        assert.is_true(signed_url.verify(path, e, s, expires)) -- its last second
        assert.same({ false, "expired" }, { signed_url.verify(path, e, s, expires + 1) })
        local old = signed_url.sign("/files/42", 300, now - 301)
        assert.same({ false, "expired" }, { signed_url.verify(parts(old)) })
    end)

    it("refuses a changed path, expiry or signature as a bad signature", function()
        local path, e, s = parts((signed_url.sign("/files/42", 300)))
        local bad = { false, "bad signature" }
        assert.same(bad, { signed_url.verify("/files/43", e, s) })
        assert.same(bad, { signed_url.verify("/avatars/42", e, s) })
        assert.same(bad, { signed_url.verify(path, tostring(tonumber(e) + 3600), s) })
        local flipped = (s:sub(1, 1) == "0" and "1" or "0") .. s:sub(2)
        assert.same(bad, { signed_url.verify(path, e, flipped) })
        assert.same(bad, { signed_url.verify(path, e, s:sub(1, 63)) })
        assert.same(bad, { signed_url.verify(path, e, "") })
        assert.same(bad, { signed_url.verify(path, e .. "x", s) })
        assert.same(bad, { signed_url.verify(path, "-1", s) })
        assert.same(bad, { signed_url.verify(path, nil, s) })
        assert.same(bad, { signed_url.verify(path, e, nil) })
        -- another secret's signature
        local other = host.crypto.hmac_sha256(("x"):rep(16), path .. "\n" .. e)
        assert.same(bad, { signed_url.verify(path, e, other) })
    end)
end)

-- host.json: cjson decoding; an encoder that keeps arrays (also empty ones) and exact
-- integers up to 2^53.
local host = require "host"
local json = host.json

describe("json", function()
    it("round-trips objects, arrays, strings, numbers, booleans and null", function()
        local v = { a = 1, b = { 1, 2, 3 }, c = "x\"y\\z\n\t/é😀", d = true, e = false, f = 1.5 }
        local back = json.decode(json.encode(v))
        assert.same(v, back)
        assert.equal('{"n":null}', json.encode({ n = host.null }))
        assert.equal(host.null, json.decode('{"n":null}').n)
    end)

    it("encodes a table marked with json.array as an array, also when empty", function()
        assert.equal("[]", json.encode(json.array()))
        assert.equal('{"list":[]}', json.encode({ list = json.array({}) }))
        assert.equal("{}", json.encode({}))
        assert.equal("[1,2]", json.encode({ 1, 2 }))
        assert.is_true(json.is_array(json.array({})))
    end)

    it("keeps integers exact up to 2^53", function()
        assert.equal("1234567890123456", json.encode(1234567890123456))
        assert.equal("9007199254740991", json.encode(2 ^ 53 - 1))
        assert.equal("-42", json.encode(-42))
        assert.equal("0.1", json.encode(0.1):sub(1, 3))
    end)

    it("escapes control characters", function()
        assert.equal('"\\u0001\\u001f"', json.encode("\1\31"))
    end)

    it("encodes sparse or mixed tables as objects", function()
        local s = json.encode({ [1] = "a", [3] = "c" })
        assert.same({ ["1"] = "a", ["3"] = "c" }, json.decode(s))
        assert.same({ ["1"] = "a", x = 1 }, json.decode(json.encode({ "a", x = 1 })))
    end)

    it("raises on values JSON cannot hold, and the safe variants return nil, err", function()
        assert.has_error(function() json.encode({ f = print }) end, "cannot encode")
        assert.has_error(function() json.encode(0 / 0) end, "NaN")
        local v, err = json.safe.encode({ f = print })
        assert.is_nil(v)
        assert.matches("cannot encode", err)
        local d, derr = json.safe.decode("{bad")
        assert.is_nil(d)
        assert.truthy(derr)
        assert.has_error(function() json.decode("{bad") end)
    end)

    it("refuses numbers JSON does not have: hexadecimal, NaN, Infinity", function()
        for _, text in ipairs({ '{"n":0x3e9}', '{"n":NaN}', '{"n":Infinity}', '{"n":-Infinity}',
            "0x3e9", "NaN", "inf" }) do
            local v, err = json.safe.decode(text)
            assert.is_nil(v, text)
            assert.truthy(err)
            assert.has_error(function() json.decode(text) end)
        end
        assert.equal(1001, json.decode('{"n":1001}').n)
        assert.equal(-1.5e3, json.decode("[-1.5e3]")[1])
    end)

    it("marks a decoded top-level array, so [] is told from {}", function()
        for _, decode in ipairs({ json.decode, json.safe.decode }) do
            assert.is_true(json.is_array(decode("[]")))
            assert.is_true(json.is_array(decode(" \r\n\t[1,2]")))
            assert.is_false(json.is_array(decode("{}")))
            assert.is_false(json.is_array(decode(' {"a":[]}')))
        end
        assert.equal("[]", json.encode(json.decode("[]")))
        assert.equal("{}", json.encode(json.decode("{}")))
    end)

    it("escapes every byte that needs it wherever it stands in a long string (the scan 8 bytes at a time)", function()
        local plain = ("ABCDEFGHabcdefgh0123456789+/="):rep(3)
        for _, special in ipairs({ '"', "\\", "\n", "\0", "\31", "\127", "\200" }) do
            for at = 1, 20 do
                local s = plain:sub(1, at - 1) .. special .. plain:sub(at)
                local enc = json.encode({ s = s })
                assert.equal(s, json.decode(enc).s)
                local escaped = special == '"' and '\\"' or special == "\\" and "\\\\"
                    or special == "\n" and "\\n" or special == "\0" and "\\u0000"
                    or special == "\31" and "\\u001f" or special
                assert.equal('{"s":"' .. plain:sub(1, at - 1) .. escaped .. plain:sub(at) .. '"}', enc)
            end
        end
    end)

    it("refuses to nest deeper than 128 levels", function()
        local t = {}
        local cur = t
        for _ = 1, 200 do cur.x = {} cur = cur.x end
        assert.has_error(function() json.encode(t) end, "nesting deeper")
    end)
end)

-- lib.password: the client's password obfuscation and the password policy
-- (docs/protocol.md §3). The Qt client sends each UTF-16 code unit XOR (n % 255), n being
-- the length in UTF-16 code units; the server reverses it and hashes only the clear text.
-- Pure functions, no host calls: the chat role and the specs load it as they are.
local bit = require "bit"

local M = {}

local band, bor, bxor, lshift, rshift = bit.band, bit.bor, bit.bxor, bit.lshift, bit.rshift
local byte, char, concat = string.byte, string.char, table.concat

M.MIN_LEN, M.MAX_LEN = 6, 15

-- Strict UTF-8 -> array of code points, or nil (overlong forms, surrogates, > U+10FFFF and
-- truncated sequences are refused).
local function code_points(s)
    local out, i, n = {}, 1, #s
    while i <= n do
        local c = byte(s, i)
        local cp, len, min
        if c < 0x80 then cp, len, min = c, 1, 0
        elseif c >= 0xC2 and c <= 0xDF then cp, len, min = band(c, 0x1F), 2, 0x80
        elseif c >= 0xE0 and c <= 0xEF then cp, len, min = band(c, 0x0F), 3, 0x800
        elseif c >= 0xF0 and c <= 0xF4 then cp, len, min = band(c, 0x07), 4, 0x10000
        else return nil end
        if i + len - 1 > n then return nil end
        for k = i + 1, i + len - 1 do
            local cc = byte(s, k)
            if band(cc, 0xC0) ~= 0x80 then return nil end
            cp = bor(lshift(cp, 6), band(cc, 0x3F))
        end
        if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
        out[#out + 1] = cp
        i = i + len
    end
    return out
end

local function utf16_units(cps)
    local units = {}
    for _, cp in ipairs(cps) do
        if cp < 0x10000 then
            units[#units + 1] = cp
        else
            cp = cp - 0x10000
            units[#units + 1] = 0xD800 + rshift(cp, 10)
            units[#units + 1] = 0xDC00 + band(cp, 0x3FF)
        end
    end
    return units
end

local function utf8_char(cp)
    if cp < 0x80 then return char(cp) end
    if cp < 0x800 then
        return char(bor(0xC0, rshift(cp, 6)), bor(0x80, band(cp, 0x3F)))
    end
    if cp < 0x10000 then
        return char(bor(0xE0, rshift(cp, 12)), bor(0x80, band(rshift(cp, 6), 0x3F)),
            bor(0x80, band(cp, 0x3F)))
    end
    return char(bor(0xF0, rshift(cp, 18)), bor(0x80, band(rshift(cp, 12), 0x3F)),
        bor(0x80, band(rshift(cp, 6), 0x3F)), bor(0x80, band(cp, 0x3F)))
end

-- UTF-16 units -> UTF-8. The key is below 256, so the XOR keeps every surrogate a surrogate
-- of the same half: pairs stay pairs.
local function from_units(units)
    local out, i = {}, 1
    while i <= #units do
        local u = units[i]
        if u >= 0xD800 and u <= 0xDBFF and units[i + 1] then
            local lo = units[i + 1]
            out[#out + 1] = utf8_char(0x10000 + lshift(u - 0xD800, 10) + (lo - 0xDC00))
            i = i + 2
        else
            out[#out + 1] = utf8_char(u)
            i = i + 1
        end
    end
    return concat(out)
end

-- xor(s) -> the (de)obfuscated string | nil, "not UTF-8". Self-inverse: the same function
-- obfuscates (what the client does) and reverses it (what the server does).
function M.xor(s)
    if type(s) ~= "string" then return nil, "not a string" end
    local cps = code_points(s)
    if not cps then return nil, "not UTF-8" end
    local units = utf16_units(cps)
    local key = #units % 255
    for i = 1, #units do units[i] = bxor(units[i], key) end
    return from_units(units)
end

-- The policy of a clear password: 6..15 characters of [a-zA-Z0-9!@#$%^&*.].
function M.acceptable(clear)
    return type(clear) == "string" and #clear >= M.MIN_LEN and #clear <= M.MAX_LEN
        and clear:match("^[a-zA-Z0-9!@#%$%%%^&%*%.]+$") ~= nil
end

-- clear(obfuscated) -> the clear password when it meets the policy | nil
function M.clear(obfuscated)
    -- 15 UTF-16 units are at most 45 bytes of UTF-8: anything longer cannot pass
    if type(obfuscated) ~= "string" or #obfuscated > 3 * M.MAX_LEN then return nil end
    local clear = M.xor(obfuscated)
    if not M.acceptable(clear) then return nil end
    return clear
end

return M

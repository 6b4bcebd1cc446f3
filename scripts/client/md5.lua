-- client.md5: MD5 (RFC 1321) of a string, in Lua on LuaJIT's bit operations. The chat
-- role's 1035 requires an md5 of the image (32 hex digits) as the Season 2 client sends
-- it; the host's libsodium has no MD5 and the servers never rely on it (the resource role
-- names the complete file by its BLAKE3), so a slow-ish Lua digest of a file of a few MB is
-- enough here.
local bit = require "bit"
local band, bor, bxor, bnot, rol, tobit = bit.band, bit.bor, bit.bxor, bit.bnot, bit.rol, bit.tobit

local M = {}

local K, S = {}, {}
for i = 0, 63 do K[i] = tobit(math.floor(math.abs(math.sin(i + 1)) * 2 ^ 32)) end
local SHIFTS = { { 7, 12, 17, 22 }, { 5, 9, 14, 20 }, { 4, 11, 16, 23 }, { 6, 10, 15, 21 } }
for i = 0, 63 do S[i] = SHIFTS[math.floor(i / 16) + 1][i % 4 + 1] end

-- One 64-byte block of s starting at byte i into the state h (4 words).
local function block(h, s, i, X)
    for j = 0, 15 do
        local b0, b1, b2, b3 = s:byte(i + 4 * j, i + 4 * j + 3)
        X[j] = tobit(b0 + b1 * 256 + b2 * 65536 + b3 * 16777216)
    end
    local a, b, c, d = h[1], h[2], h[3], h[4]
    for r = 0, 63 do
        local f, g
        if r < 16 then
            f, g = bor(band(b, c), band(bnot(b), d)), r
        elseif r < 32 then
            f, g = bor(band(d, b), band(bnot(d), c)), (5 * r + 1) % 16
        elseif r < 48 then
            f, g = bxor(b, c, d), (3 * r + 5) % 16
        else
            f, g = bxor(c, bor(b, bnot(d))), (7 * r) % 16
        end
        f = tobit(f + a + K[r] + X[g])
        a, d, c = d, c, b
        b = tobit(b + rol(f, S[r]))
    end
    h[1], h[2], h[3], h[4] = tobit(h[1] + a), tobit(h[2] + b), tobit(h[3] + c), tobit(h[4] + d)
end

-- hex(s) -> the MD5 of s as 32 lowercase hex digits
function M.hex(s)
    local h = { tobit(0x67452301), tobit(0xefcdab89), tobit(0x98badcfe), tobit(0x10325476) }
    local X, n = {}, #s
    local whole = n - n % 64
    for i = 1, whole, 64 do block(h, s, i, X) end
    -- the tail, 0x80, zeros to 56 mod 64, then the length in bits (64-bit little-endian)
    local bits = n * 8
    local len = {}
    for k = 1, 8 do
        len[k] = string.char(bits % 256)
        bits = math.floor(bits / 256)
    end
    local tail = s:sub(whole + 1) .. "\128"
    tail = tail .. ("\0"):rep((56 - #tail) % 64) .. table.concat(len)
    for i = 1, #tail, 64 do block(h, tail, i, X) end
    local out = {}
    for k = 1, 4 do out[k] = bit.tohex(bit.bswap(h[k])) end
    return table.concat(out)
end

return M

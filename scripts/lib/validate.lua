-- lib.validate: server-side checks of user input (docs/protocol.md §3).
local host = require "host"

local M = {}

-- wrong_type(body, fields, json_types) -> the name of the first of fields (each {name=,
-- kind=}) whose value in the decoded JSON body has another type than json_types[kind]
-- (a Lua type name) | nil. Absent fields and JSON null are not wrong.
function M.wrong_type(body, fields, json_types)
    for _, f in ipairs(fields) do
        local v = body[f.name]
        if v ~= nil and v ~= host.null and type(v) ~= json_types[f.kind] then return f.name end
    end
    return nil
end

-- A plausible e-mail address: local@domain.tld, printable ASCII, at most 254 bytes.
function M.email(s)
    if type(s) ~= "string" or #s < 3 or #s > 254 then return false end
    local localpart, domain = s:match("^([%w%.%%%+%-_]+)@([%w%.%-]+)$")
    if not localpart or #localpart > 64 then return false end
    if localpart:find("..", 1, true) or domain:find("..", 1, true) then return false end
    if not domain:find(".", 1, true) or domain:match("^[%.%-]") or domain:match("[%.%-]$") then
        return false
    end
    return true
end

-- A uid as the protocol carries it: a positive integer below 2^31.
function M.uid(v)
    return type(v) == "number" and v >= 1 and v < 2147483648 and v == math.floor(v)
end

-- A user name: 3..20 ASCII letters, digits, '_' or '-', not all digits (chat search reads an
-- all-digit text as a uid). The database compares names case-insensitively, so "Bob" and
-- "bob" are one name.
function M.user_name(s)
    return type(s) == "string" and #s >= 3 and #s <= 20 and s:match("^[%a%d_%-]+$") ~= nil
        and s:match("^%d+$") == nil
end

-- Valid UTF-8 (no overlong forms, surrogates or code points above U+10FFFF), at most
-- max_bytes bytes; control characters allowed (chat text has line breaks).
function M.utf8(s, max_bytes)
    if type(s) ~= "string" or #s > max_bytes then return false end
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2
            or (c >= 0xE0 and c <= 0xEF) and 3 or (c >= 0xF0 and c <= 0xF4) and 4
        if not len or i + len - 1 > n then return false end
        for k = i + 1, i + len - 1 do
            local cc = s:byte(k)
            if cc < 0x80 or cc > 0xBF then return false end
        end
        -- overlong 3/4-byte forms, surrogates and code points above U+10FFFF
        local c2 = s:byte(i + 1)
        if (c == 0xE0 and c2 < 0xA0) or (c == 0xED and c2 > 0x9F)
            or (c == 0xF0 and c2 < 0x90) or (c == 0xF4 and c2 > 0x8F) then
            return false
        end
        i = i + len
    end
    return true
end

-- Valid UTF-8 without control characters, at most max_bytes bytes (free text such as a
-- nickname or an icon path).
function M.text(s, max_bytes)
    if type(s) ~= "string" or s:find("[%z\1-\31\127]") then return false end
    return M.utf8(s, max_bytes)
end

return M

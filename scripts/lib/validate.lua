-- lib.validate: server-side checks of user input (shared/PROTOCOL.md §3).
local M = {}

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

return M

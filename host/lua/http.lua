-- chathost.http: the Lua half of the HTTP server (host/http_server.c): the metatable of
-- `req`, whose `json`, `json_error` and `query` fields are computed on first use, so a
-- handler that never reads the body pays nothing for parsing it.
local host = require "host"

local M = {}

local function unescape(s)
    s = s:gsub("+", " ")
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- "a=1&b=x%20y" -> {a="1", b="x y"}; a repeated key keeps its last value.
function M.parse_query(qs)
    local out = {}
    if not qs or qs == "" then return out end
    for pair in qs:gmatch("[^&]+") do
        local k, v = pair:match("^([^=]*)=(.*)$")
        if k then out[unescape(k)] = unescape(v) end
    end
    return out
end

local lazy = {}

function lazy.json(req)
    local body = rawget(req, "body")
    if body == nil or body == "" then
        rawset(req, "json_error", "empty body")
        return nil
    end
    local v, err = host.json.safe.decode(body) -- a top-level [] is marked as an array
    if v == nil then
        rawset(req, "json_error", err or "invalid JSON")
        return nil
    end
    rawset(req, "json", v)
    return v
end

function lazy.json_error(req)
    if lazy.json(req) ~= nil then return nil end
    return rawget(req, "json_error")
end

function lazy.query(req)
    local q = M.parse_query(rawget(req, "query_string"))
    rawset(req, "query", q)
    return q
end

M.req_mt = {
    __index = function(req, k)
        local f = lazy[k]
        if f then return f(req) end
        return nil
    end,
}

return M

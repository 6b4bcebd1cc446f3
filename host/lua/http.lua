-- chathost.http: the Lua half of the HTTP server (host/http_server.c): the metatable of
-- `req`, whose `json`, `json_error` and `query` fields are computed on first use, so a
-- handler that never reads the body pays nothing for parsing it; `req:send_file`, whose
-- result a handler returns to have the server stream a file; and the Range parser.
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

-- parse_range(header, size) -> offset, length | "unsatisfiable" | nil: a Range header
-- (RFC 9110 §14.2) against a file of size bytes. "bytes=a-b" (b past the end is cut to
-- it), "bytes=a-", "bytes=-n" (the last n bytes, all of them when n >= size). nil: no
-- header, another unit, several ranges or a malformed one: the server ignores it and
-- sends the whole file (200). "unsatisfiable": a starts at or after the end, or -0, or
-- any range of an empty file: answer 416 with Content-Range "bytes */size".
function M.parse_range(header, size)
    if type(header) ~= "string" then return nil end
    local spec = header:match("^%s*bytes%s*=%s*(.-)%s*$")
    if not spec or spec:find(",", 1, true) then return nil end
    local a, b = spec:match("^(%d*)%s*%-%s*(%d*)$")
    if not a or (a == "" and b == "") then return nil end
    if a == "" then -- the last n bytes
        local n = tonumber(b)
        if n == 0 or size == 0 then return "unsatisfiable" end
        if n > size then n = size end
        return size - n, n
    end
    local first, last = tonumber(a), b ~= "" and tonumber(b) or nil
    if last and last < first then return nil end
    if first >= size then return "unsatisfiable" end
    if not last or last >= size then last = size - 1 end
    return first, last - first + 1
end

-- A handler's return value that http_server.c streams (see req:send_file).
M.file_mt = {}

local methods = {}

-- req:send_file(path, {offset=, length=, range=, content_type=, status=, headers=}?)
--   -> a response to return | nil, err, code (the file cannot be opened: ENOENT, ...)
-- The server sends offset..offset+length-1 of the file (default: all of it) 64 KiB at a
-- time, each read off the loop and each write awaited, then closes the file. range = the
-- request's Range header: 206 with Content-Range for a satisfiable range, 416 with
-- "Content-Range: bytes */size" and no body for an unsatisfiable one, the whole file
-- otherwise. If the file fails while being sent (the headers are out), the connection is
-- closed.
function methods.send_file(req, path, opts)
    opts = opts or {}
    local f, err, code = host.file.open(path, "r")
    if not f then return nil, err, code end
    local size
    size, err, code = f:size()
    if not size then
        f:close()
        return nil, err, code
    end
    local headers = {}
    for k, v in pairs(opts.headers or {}) do headers[k] = v end
    local status, offset, length = opts.status or 200, opts.offset or 0, opts.length
    if opts.range ~= nil then
        local first, n = M.parse_range(opts.range, size)
        if first == "unsatisfiable" then
            status, offset, length = 416, 0, 0
            headers["Content-Range"] = ("bytes */%d"):format(size)
        elseif first then
            status, offset, length = 206, first, n
            headers["Content-Range"] = ("bytes %d-%d/%d"):format(first, first + n - 1, size)
        end
    end
    length = length or size - offset
    if offset < 0 or length < 0 or offset + length > size then
        f:close()
        return nil, ("%s: bytes %d..%d are beyond its %d bytes"):format(path, offset,
            offset + length, size), "ERANGE"
    end
    return setmetatable({ file = f, offset = offset, length = length, status = status,
        headers = headers, content_type = opts.content_type or "application/octet-stream" },
        M.file_mt)
end

M.req_mt = {
    __index = function(req, k)
        local m = methods[k]
        if m then return m end
        local f = lazy[k]
        if f then return f(req) end
        return nil
    end,
}

return M

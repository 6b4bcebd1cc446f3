-- helpers.http: a small HTTP/1.1 client over host.tcp for specs that drive the gate and
-- the admin listeners. One connection per client object, kept alive between requests.
local host = require "host"

local M = {}
M.__index = M

-- connect(port, host?, source?) -> client; source: the local address to speak from
function M.connect(port, addr, source)
    local conn = assert(host.tcp.connect(addr or "127.0.0.1", port,
        { timeout_ms = 5000, bind = source }))
    return setmetatable({ conn = conn, port = port }, M)
end

function M:close() self.conn:close() end

-- Builds the bytes of a request. headers: { ["Content-Type"] = "..." }.
function M.format(method, path, body, headers)
    local lines = { ("%s %s HTTP/1.1"):format(method, path), "Host: 127.0.0.1" }
    for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
    if body then lines[#lines + 1] = "Content-Length: " .. #body end
    return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

-- Reads one response: {status=, headers={lower-case name = value}, body=} | nil, err
function M:read_response(timeout_ms)
    local head, err = self.conn:read_until("\r\n\r\n", timeout_ms)
    if not head then return nil, err end
    local status = tonumber(head:match("^HTTP/1%.[01] (%d%d%d)"))
    if not status then return nil, "bad status line: " .. head:sub(1, 80) end
    local headers = {}
    for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
    local len = tonumber(headers["content-length"] or "0")
    local body = ""
    if len > 0 then
        body, err = self.conn:read_exactly(len, timeout_ms)
        if not body then return nil, err end
    end
    return { status = status, headers = headers, body = body }
end

-- request(method, path, body?, headers?) -> response | nil, err
function M:request(method, path, body, headers)
    local ok, err = self.conn:send(M.format(method, path, body, headers))
    if not ok then return nil, err end
    return self:read_response()
end

-- post_json(path, tbl_or_string) -> response with .json decoded | nil, err
function M:post_json(path, value)
    local body = type(value) == "string" and value or host.json.encode(value)
    local res, err = self:request("POST", path, body, { ["Content-Type"] = "application/json" })
    if not res then return nil, err end
    res.json = host.json.safe.decode(res.body)
    return res
end

-- One request on a fresh connection.
function M.post(port, path, value)
    local c = M.connect(port)
    local res, err = c:post_json(path, value)
    c:close()
    return res, err
end

function M.get(port, path)
    local c = M.connect(port)
    local res, err = c:request("GET", path)
    c:close()
    return res, err
end

return M

-- helpers.ws_client: a small WebSocket client (RFC 6455) for specs, over host.tcp: the
-- opening handshake, masked frames (as a browser sends them), and the chat mapping of
-- docs/protocol.md §5.5 (one text message {"id":..,"body":{..}} per chat frame). It has
-- chat_client's methods (send, request, wait_push, read_frame, no_push, close, closed),
-- so a spec drives a WebSocket user like a TCP one; frame() and read_ws() send and read
-- raw frames for the bad-input specs.
local host = require "host"
local bit = require "bit"

local M = {}
M.__index = M

-- handshake(conn, opts) -> status, headers (lower-case names) | nil, err
local function handshake(conn, port, opts)
    local key = opts.key or host.crypto.base64_encode(host.crypto.random_hex(8)) -- 16 bytes
    local lines = { "GET " .. (opts.path or "/") .. " HTTP/1.1", "Host: 127.0.0.1:" .. port,
        "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " .. key,
        "Sec-WebSocket-Version: 13" }
    if opts.origin then lines[#lines + 1] = "Origin: " .. opts.origin end
    local ok, err = conn:send(table.concat(lines, "\r\n") .. "\r\n\r\n")
    if not ok then return nil, err end
    local head, rerr = conn:read_until("\r\n\r\n", opts.timeout_ms or 5000)
    if not head then return nil, rerr end
    local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
    local headers = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
        headers[name:lower()] = value
    end
    return status, headers
end

-- connect(port, {origin=?, key=?, timeout_ms=?}) -> client | nil, err, status (the HTTP status
-- of a refused handshake)
function M.connect(port, opts)
    opts = opts or {}
    local conn, err = host.tcp.connect("127.0.0.1", port, { timeout_ms = opts.timeout_ms or 5000 })
    if not conn then return nil, err end
    local status, headers = handshake(conn, port, opts)
    if status ~= 101 then
        conn:close()
        return nil, "handshake: " .. tostring(status or headers), status
    end
    return setmetatable({ conn = conn, pushes = {}, accept = headers["sec-websocket-accept"] }, M)
end

-- connect_raw(port) -> conn: a TCP connection with no handshake sent (the handshake specs)
function M.connect_raw(port)
    return assert(host.tcp.connect("127.0.0.1", port, { timeout_ms = 5000 }))
end

local function be(n, bytes)
    local t = {}
    for i = bytes, 1, -1 do
        t[i] = string.char(n % 256)
        n = math.floor(n / 256)
    end
    return table.concat(t)
end

-- frame(opcode, payload, {fin=true, mask=true}) -> the bytes of one frame
function M.frame(opcode, payload, o)
    o = o or {}
    local fin = o.fin ~= false
    local masked = o.mask ~= false
    local len = #payload
    local head = string.char((fin and 0x80 or 0) + opcode)
    local mbit = masked and 0x80 or 0
    if len < 126 then
        head = head .. string.char(mbit + len)
    elseif len < 65536 then
        head = head .. string.char(mbit + 126) .. be(len, 2)
    else
        head = head .. string.char(mbit + 127) .. be(len, 8)
    end
    if not masked then return head .. payload end
    local key = { 0x12, 0x34, 0x56, 0x78 }
    local out = {}
    for i = 1, len do
        out[i] = string.char(bit.bxor(payload:byte(i), key[(i - 1) % 4 + 1]))
    end
    return head .. string.char(key[1], key[2], key[3], key[4]) .. table.concat(out)
end

function M:send_ws(opcode, payload, o) return self.conn:send(M.frame(opcode, payload, o)) end

-- read_ws(timeout_ms) -> fin, opcode, payload | nil, err (server frames are unmasked)
function M:read_ws(timeout_ms)
    local t = timeout_ms or 5000
    local h, err = self.conn:read_exactly(2, t)
    if not h then return nil, err end
    local b1, b2 = h:byte(1, 2)
    local len = b2 % 128
    if len == 126 then
        local x = assert(self.conn:read_exactly(2, t))
        len = x:byte(1) * 256 + x:byte(2)
    elseif len == 127 then
        local x = assert(self.conn:read_exactly(8, t))
        len = 0
        for i = 1, 8 do len = len * 256 + x:byte(i) end
    end
    local payload = len > 0 and assert(self.conn:read_exactly(len, t)) or ""
    return b1 >= 128, b1 % 16, payload
end

-- read_close(timeout_ms) -> the close code (and reason) the server sent, skipping other
-- frames | nil, err
function M:read_close(timeout_ms)
    while true do
        local fin, op, payload = self:read_ws(timeout_ms)
        if not fin and op == nil then return nil, op end
        if fin == nil then return nil, op end
        if op == 8 then
            if #payload < 2 then return 1005, "" end
            return payload:byte(1) * 256 + payload:byte(2), payload:sub(3)
        end
    end
end

function M:close() self.conn:close() end
function M:closed() return self.conn:closed() end

-- send(id, tbl_or_json_string) -> true | nil, err: one text message {"id":id,"body":..}
function M:send(id, body)
    if type(body) ~= "string" then body = host.json.encode(body) end
    return self:send_ws(1, ('{"id":%d,"body":%s}'):format(id, body))
end

-- Reads the next chat message: id, decoded body | nil, err (pings are answered; a close
-- frame is the error "close <code>")
function M:read_frame(timeout_ms)
    while true do
        local fin, op, payload = self:read_ws(timeout_ms)
        if fin == nil then return nil, op end
        if op == 9 then
            self:send_ws(10, payload)
        elseif op == 8 then
            local code = #payload >= 2 and payload:byte(1) * 256 + payload:byte(2) or 1005
            return nil, "close " .. code
        elseif op == 1 then
            local msg = host.json.safe.decode(payload)
            if type(msg) ~= "table" then return nil, "not an envelope: " .. payload end
            return msg.id, msg.body
        end
    end
end

-- request, wait_push, no_push: chat_client's own (they use send, read_frame and pushes)
local chat_client = require "helpers.chat_client"
M.request, M.wait_push, M.no_push = chat_client.request, chat_client.wait_push, chat_client.no_push

return M

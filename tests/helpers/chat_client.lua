-- helpers.chat_client: a chat protocol client for specs, over host.tcp's framed reads
-- (the server's own frame code): [msg_id u16 BE][body_len u16 BE][JSON body], or with a
-- u32 body_len (frame = "u16u32", the resource channel). Pushes that arrive while a reply
-- is awaited are kept for wait_push.
local host = require "host"

local M = {}
M.__index = M

-- connect(port, addr?, frame?, bind?) -> client: bind is the source address (127.0.0.2, ...)
function M.connect(port, addr, frame, bind)
    local conn, err = host.tcp.connect(addr or "127.0.0.1", port,
        { timeout_ms = 5000, frame = frame, bind = bind })
    if not conn then return nil, err end
    return setmetatable({ conn = conn, pushes = {} }, M)
end

function M:close() self.conn:close() end
function M:closed() return self.conn:closed() end

function M:send_raw(bytes) return self.conn:send(bytes) end

-- send(id, tbl_or_string) -> true | nil, err
function M:send(id, body)
    if type(body) ~= "string" then body = host.json.encode(body) end
    return self.conn:send_frame(id, body)
end

-- Reads the next frame: id, decoded body (or the raw string when not JSON) | nil, err
function M:read_frame(timeout_ms)
    local id, body = self.conn:read_frame(timeout_ms or 5000)
    if not id then return nil, body end
    local decoded = host.json.safe.decode(body)
    return id, decoded ~= nil and decoded or body
end

-- request(id, tbl) -> the reply body (frame id + 1); frames of other ids are kept as pushes
function M:request(id, body, timeout_ms)
    local ok, err = self:send(id, body)
    if not ok then return nil, err end
    return self:wait_push(id + 1, timeout_ms)
end

-- wait_push(id, timeout_ms) -> body of the first frame with that id (kept ones first)
function M:wait_push(id, timeout_ms)
    for i, p in ipairs(self.pushes) do
        if p.id == id then
            table.remove(self.pushes, i)
            return p.body
        end
    end
    local deadline = host.timer.monotonic() + (timeout_ms or 5000)
    while true do
        local left = deadline - host.timer.monotonic()
        if left <= 0 then return nil, "timeout" end
        local fid, body = self:read_frame(left)
        if not fid then return nil, body end
        if fid == id then return body end
        self.pushes[#self.pushes + 1] = { id = fid, body = body }
    end
end

-- No frame with this id arrives within ms (kept pushes included), and the connection
-- stays open all that time? (A closed connection is not "no push": it answers false.)
function M:no_push(id, ms)
    local body, err = self:wait_push(id, ms)
    return body == nil and err == "timeout"
end

return M

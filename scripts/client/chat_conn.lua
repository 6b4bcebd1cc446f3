-- client.chat_conn: the long TCP connection to a chat server (the original Qt client's
-- TcpMgr: one connection carries replies and pushes) over host.tcp's frame reads. One
-- reader task takes every frame: a reply (request id + 1) goes to the oldest request
-- waiting for that id, anything else is a push for on_push. Sends are queued so that only
-- one is in flight; a heartbeat task sends 1023 every heartbeat_ms once started. When the
-- connection ends without close() having been called, every waiting request fails and
-- on_lost(err) runs once.
local host = require "host"
local msgids = require "lib.msgids"

local M = {}
M.__index = M

local READ_IDLE_MS = 3600000 -- the reader's wait per frame; a quiet hour is not an error

-- open{host=, port=, timeout_ms=, tls=, ca_file=, on_push=fn(id, body), on_lost=fn(err)}
--   -> conn | nil, err. tls: the connection is TLS, its certificate checked against ca_file
-- (else the system's CAs) and host.
function M.open(opts)
    local sock, err = host.tcp.connect(opts.host, opts.port, { timeout_ms = opts.timeout_ms,
        tls = opts.tls, ca_file = opts.ca_file })
    if not sock then return nil, err end
    local self = setmetatable({ sock = sock, waiting = {}, send_queue = {}, sending = false,
        closed = false, on_push = opts.on_push, on_lost = opts.on_lost,
        stop = host.promise() }, M)
    self.reader = host.spawn(M.read_loop, self)
    return self
end

-- Every request still waiting gets nil, err.
local function fail_waiting(self, err)
    local waiting = self.waiting
    self.waiting = {}
    for _, queue in pairs(waiting) do
        for _, p in ipairs(queue) do p:resolve(nil, err) end
    end
end

-- Ends the connection (idempotent); the reader and heartbeat tasks end at once.
local function shut(self, err)
    if self.closed then return false end
    self.closed = true
    self.stop:resolve(true)
    self.sock:close()
    fail_waiting(self, err)
    for _, p in ipairs(self.send_queue) do p:resolve() end
    self.send_queue = {}
    return true
end

function M:dispatch(id, body)
    local queue = self.waiting[id]
    if queue and #queue > 0 then
        table.remove(queue, 1):resolve(body)
    elseif self.on_push then
        self.on_push(id, body)
    end
end

function M:read_loop()
    self.reader_co = coroutine.running()
    local err
    while not self.closed do
        local id, body = self.sock:read_frame(READ_IDLE_MS)
        if self.closed then break end
        if id then
            local decoded = host.json.safe.decode(body)
            if type(decoded) == "table" then
                self:dispatch(id, decoded)
            else
                host.log.warn("chat frame ", id, " without a JSON object body")
            end
        elseif body ~= "timeout" then
            err = body
            break
        end
    end
    if shut(self, err or "closed") and self.on_lost then self.on_lost(err or "closed") end
end

-- send(id, body_table) -> true | nil, err (one frame; waits for its turn)
function M:send(id, body)
    if self.closed then return nil, "closed" end
    if self.sending then
        local turn = host.promise()
        self.send_queue[#self.send_queue + 1] = turn
        turn:wait()
        if self.closed then return nil, "closed" end
    end
    self.sending = true
    local ok, err = self.sock:send_frame(id, host.json.encode(body))
    local next_turn = table.remove(self.send_queue, 1)
    if next_turn then next_turn:resolve() else self.sending = false end
    return ok, err
end

-- request(id, body, timeout_ms) -> reply body | nil, err. The reply is the next frame
-- id + 1 not claimed by an earlier request (the server answers a session's frames in
-- order). A request that times out keeps its place, so a late reply cannot be taken for
-- the answer to a later one.
function M:request(id, body, timeout_ms)
    if self.closed then return nil, "closed" end
    local queue = self.waiting[msgids.reply(id)]
    if not queue then
        queue = {}
        self.waiting[msgids.reply(id)] = queue
    end
    local p = host.promise()
    queue[#queue + 1] = p -- before sending: the reply may come before send returns
    local ok, err = self:send(id, body)
    if not ok then
        for i, q in ipairs(queue) do
            if q == p then table.remove(queue, i) break end
        end
        return nil, err
    end
    return p:wait(timeout_ms)
end

-- start_heartbeat(uid, every_ms): 1023 {fromuid} every every_ms. A
-- heartbeat without a reply in time means the connection is gone: it is closed and
-- on_lost runs.
function M:start_heartbeat(uid, every_ms)
    self.heartbeat = host.spawn(function()
        self.heartbeat_co = coroutine.running()
        while not self.closed do
            if self.stop:wait(every_ms) then return end
            local reply, err = self:request(msgids.HEARTBEAT, { fromuid = uid }, every_ms)
            if not reply and err == "timeout" and not self.closed then
                shut(self, "no heartbeat reply")
                if self.on_lost then self.on_lost("no heartbeat reply") end
                return
            end
        end
    end)
end

-- close(): ends the connection without on_lost; waits for its tasks (unless called by one).
function M:close()
    shut(self, "closed")
    local me = coroutine.running()
    if self.reader and me ~= self.reader_co then self.reader:wait(1000) end
    if self.heartbeat and me ~= self.heartbeat_co then self.heartbeat:wait(1000) end
end

return M

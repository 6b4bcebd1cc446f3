-- client.res_conn: the resource channel (docs/protocol.md §13) as the Season 2 client
-- speaks it: [id u16][len u32][JSON] frames over host.tcp (frame "u16u32"), opened after
-- the chat login and kept for the session. An image upload is 1041 (chunk 1, with the
-- token), then the next chunks with up to WINDOW in flight, each ack freeing a slot (1037;
-- 1043 after a resume); a download is stop-and-wait 1047 chunks, 1045 first when the size
-- is not known. The server answers a connection's frames in order and sends nothing
-- unasked, so one transfer at a time holds the connection and reads its own replies (no
-- reader task). A connection that drops (or stays silent past timeout_ms) is opened again
-- and the transfer goes on: an upload resumes with 1043 from its last confirmed chunk, a
-- download asks for its chunk again. The token is in every request, as a resume on a new
-- connection needs (§13.2). tests/helpers/res_client.lua builds its frames with this too.
local host = require "host"

local M = {}
M.__index = M

M.CHUNK = 32768 -- raw bytes per chunk (§13.1)
M.WINDOW = 5    -- chunks in flight at most (the S2 client's MAX_CWND_SIZE)

-- max_seq(n) -> chunks of an n-byte file
function M.max_seq(n) return math.ceil(n / M.CHUNK) end

-- piece(data, seq) -> chunk seq of a file: its bytes, and the bytes through it
local function piece(data, seq)
    local s = data:sub((seq - 1) * M.CHUNK + 1, seq * M.CHUNK)
    return s, (seq - 1) * M.CHUNK + #s
end
M.piece = piece

-- image_body(id, u, seq) -> the body of image chunk seq as the S2 client builds it: 1041
-- (seq 1, with token and unique_id), 1037 (sizes as strings), 1043 (sizes as ints).
-- u = {uid, token, name, data, message_id, sender, receiver, md5?, unique_id?,
-- always_token?}
function M.image_body(id, u, seq)
    local chunk, through = piece(u.data, seq)
    local strings = id ~= 1043
    local b = { name = u.name, seq = seq, md5 = u.md5 or "",
        trans_size = strings and tostring(through) or through,
        total_size = strings and tostring(#u.data) or #u.data,
        uid = u.uid, data = host.crypto.base64_encode(chunk), message_id = u.message_id,
        sender = u.sender or u.uid, receiver = u.receiver, last = through >= #u.data and 1 or 0 }
    if id == 1041 then
        b.token, b.unique_id = u.token, u.unique_id or ""
    else
        b.last_seq = M.max_seq(#u.data)
    end
    if u.always_token then b.token = u.token end
    return b
end

-- open{host=, port=, connect_timeout_ms=, timeout_ms= (a reply), attempts= (connections
-- in a row without progress), tls=, ca_file= (TLS, its certificate checked against ca_file,
-- else the system's CAs, and host)} -> conn | nil, err (the connection is made at once)
function M.open(opts)
    local self = setmetatable({ host = opts.host, port = opts.port, tls = opts.tls,
        ca_file = opts.ca_file,
        connect_timeout_ms = opts.connect_timeout_ms or 5000,
        timeout_ms = opts.timeout_ms or 10000, attempts = opts.attempts or 3,
        busy = false, turns = {}, drops = 0, resumes = 0 }, M)
    local ok, err = self:connect()
    if not ok then return nil, err end
    return self
end

function M:connect()
    if self.sock then self.sock:close() end
    self.sock = nil
    local sock, err = host.tcp.connect(self.host, self.port,
        { timeout_ms = self.connect_timeout_ms, frame = "u16u32", tls = self.tls,
          ca_file = self.ca_file })
    if not sock then return nil, err end
    self.sock = sock
    return true
end

-- drop(): the connection is unusable (a failed send or read); the next use connects again.
function M:drop()
    if self.sock then self.sock:close() end
    self.sock = nil
    self.drops = self.drops + 1
end

function M:close()
    self.closed = true
    if self.sock then self.sock:close() end
    self.sock = nil
end

-- One transfer at a time: the replies on the connection are the holder's.
local function take_turn(self)
    if self.busy then
        local turn = host.promise()
        self.turns[#self.turns + 1] = turn
        turn:wait()
    end
    self.busy = true
end

local function give_turn(self)
    local nxt = table.remove(self.turns, 1)
    if nxt then nxt:resolve() else self.busy = false end
end

-- The connection, unless it was closed (closed here, by the peer, or by a caller): then
-- it is dropped and nil.
local function live(self)
    if self.sock and self.sock:closed() then self:drop() end
    return self.sock
end

-- send(id, body, keep?) -> true | nil, err: one frame, on a new connection when there is
-- none, unless keep (a frame of a window in flight belongs to its connection).
local function send(self, id, body, keep)
    if not live(self) then
        if self.closed or keep then return nil, "closed" end
        local ok, err = self:connect()
        if not ok then return nil, err end
    end
    local ok, err = self.sock:send_frame(id, host.json.encode(body))
    if not ok then self:drop() end
    return ok, err
end

-- The next reply with id want (other ids are skipped): body | nil, err (the connection is
-- dropped then)
local function reply(self, want)
    while live(self) do
        local id, body = self.sock:read_frame(self.timeout_ms)
        if not id then
            self:drop()
            return nil, body
        end
        local decoded = host.json.safe.decode(body)
        if id == want and type(decoded) == "table" then return decoded end
    end
    return nil, "closed"
end

-- request(id, body) -> reply | nil, err: one frame and its reply, sent again on a new
-- connection when the connection fails (downloads are stateless, so that is harmless)
local function request(self, id, body)
    local err
    for _ = 1, self.attempts do
        if self.closed then return nil, "closed" end
        local ok
        ok, err = send(self, id, body)
        if ok then
            local r
            r, err = reply(self, id + 1)
            if r then return r end
        end
    end
    return nil, err
end

-- The upload's window from seq first: chunks with id (1037 or 1043), up to WINDOW in
-- flight; each ack (error 0) marks its seq in st.acked and moves st.confirmed (every chunk
-- through it acked). -> true | nil, err (connection) | false, reply (an error)
local function run_window(self, u, st, id, first)
    local max = M.max_seq(#u.data)
    local nxt, inflight = first, 0
    while true do
        while inflight < M.WINDOW and nxt <= max do
            if not st.acked[nxt] then
                local ok, err = send(self, id, M.image_body(id, u, nxt), nxt > first)
                if not ok then return nil, err end
                inflight = inflight + 1
            end
            nxt = nxt + 1
        end
        if inflight == 0 then return true end
        local r, err = reply(self, id + 1)
        if not r then return nil, err end
        inflight = inflight - 1
        if r.error ~= 0 then return false, r end
        if type(r.seq) == "number" then st.acked[r.seq] = true end
        while st.acked[st.confirmed + 1] do st.confirmed = st.confirmed + 1 end
        if st.on_progress then
            st.on_progress(math.min(st.confirmed * M.CHUNK, #u.data), #u.data)
        end
    end
end

-- upload(u, on_progress?) -> the last ack | nil, err, reply?: u as image_body's (with
-- message_id, sender, receiver from the 1036). on_progress(bytes confirmed, total) after
-- each ack. A dropped connection is opened again and the upload resumed with 1043 from
-- the first chunk not acked, at most attempts times in a row without progress; a reply
-- with an error ends it: nil, "refused", reply.
function M:upload(u, on_progress)
    take_turn(self)
    u.always_token = true
    local st = { acked = {}, confirmed = 0, on_progress = on_progress }
    local tries, err = 0, nil
    while tries < self.attempts and not self.closed do
        tries = tries + 1
        local before = st.confirmed
        local ok, r
        if not st.acked[1] then
            ok, err = send(self, 1041, M.image_body(1041, u, 1))
            if ok then
                r, err = reply(self, 1042)
                if r and r.error ~= 0 then give_turn(self) return nil, "refused", r end
                if r then
                    st.acked[1], st.confirmed = true, 1
                    if on_progress then on_progress(math.min(M.CHUNK, #u.data), #u.data) end
                    ok, r = run_window(self, u, st, 1037, 2)
                end
            end
        else
            self.resumes = self.resumes + 1
            ok, r = run_window(self, u, st, 1043, st.confirmed + 1)
        end
        if ok then give_turn(self) return { error = 0, seq = st.confirmed } end
        if ok == false then give_turn(self) return nil, "refused", r end
        err = r or err
        if st.confirmed > before then tries = 0 end
    end
    give_turn(self)
    return nil, err or "closed"
end

-- info(u, message_id) -> the 1046 {name, total_size, sender_id, recv_id, ...} | nil, err,
-- reply (u = {uid, token})
function M:info(u, message_id)
    take_turn(self)
    local r, err = request(self, 1045, { message_id = message_id, uid = u.uid, token = u.token })
    give_turn(self)
    if not r then return nil, err end
    if r.error ~= 0 then return nil, "refused", r end
    return r
end

-- download(u, img{message_id, name, total_size, sender_id, receiver_id}, write) -> bytes
-- | nil, err, reply?: 1047 chunks from seq 1 until is_last, each handed to
-- write(offset, bytes) -> true | nil, err (a failing write ends the download: nil, err).
function M:download(u, img, write)
    take_turn(self)
    local seq, offset = 1, 0
    local result, err, bad
    while true do
        local r
        r, err = request(self, 1047, { name = img.name, seq = seq, trans_size = tostring(offset),
            total_size = tostring(img.total_size or 0), token = u.token, uid = u.uid,
            sender_id = img.sender_id, receiver_id = img.receiver_id,
            message_id = img.message_id })
        if not r then break end
        if r.error ~= 0 then err, bad = "refused", r break end
        local data = type(r.data) == "string" and host.crypto.base64_decode(r.data)
        if r.seq ~= seq or not data then err = "bad reply" break end
        local ok, werr = write(offset, data)
        if not ok then err = werr break end
        offset = offset + #data
        if r.is_last == true then result = offset break end
        seq = seq + 1
    end
    give_turn(self)
    if result then return result end
    return nil, err, bad
end

return M

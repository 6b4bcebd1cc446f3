-- helpers.res_client: a resource channel client for specs ([id u16][len u32][JSON] frames,
-- helpers.chat_client over host.tcp with frame "u16u32") that sends what the Season 2
-- client sends (s2-client.md §4-6): the image upload with its window of 5 chunks, the
-- avatar upload stop-and-wait, and the stop-and-wait downloads.
local host = require "host"
local chat_client = require "helpers.chat_client"

local M = {}

-- The frames are the terminal client's (scripts/client/res_conn.lua): one builder of the
-- S2 client's chunk bodies for both.
local res_conn = dofile(host.root .. "/scripts/client/res_conn.lua")

M.CHUNK = res_conn.CHUNK
M.WINDOW = res_conn.WINDOW -- MAX_CWND_SIZE

-- connect(port) -> client (helpers.chat_client) | nil, err
function M.connect(port, bind)
    return chat_client.connect(port, "127.0.0.1", "u16u32", bind)
end

-- max_seq(n) -> chunks of an n-byte file
M.max_seq = res_conn.max_seq

local piece = res_conn.piece

-- The body of image chunk seq as the client builds it (client.res_conn.image_body), the
-- unique_id of 1041 "{spec}" unless u names one.
function M.image_body(id, u, seq)
    if u.unique_id == nil then u.unique_id = "{spec}" end
    return res_conn.image_body(id, u, seq)
end

-- upload_image(c, u, opts?) -> the last ack (error 0) | the first ack with an error
-- 1041, then the window of 5: every ack frees a slot and the next chunk goes (1037, or
-- 1043 with opts.resume_from: the client's resume, chunks from there, sizes as ints).
-- opts.stop_after = n: returns after n chunks are acknowledged (a pause), with the
-- acknowledged seqs in .acked (in-flight chunks left unanswered on the wire)
function M.upload_image(c, u, opts)
    opts = opts or {}
    local max = M.max_seq(#u.data)
    local seq, id = 1, 1041
    if opts.resume_from then seq, id = opts.resume_from, 1043 end
    local acked, inflight, last = {}, 0, nil
    local function send(s)
        assert(c:send(id, M.image_body(id, u, s)))
        inflight = inflight + 1
    end
    if id == 1041 then
        local r = assert(c:request(1041, M.image_body(1041, u, 1)))
        if r.error ~= 0 or max == 1 then return r end
        acked[1] = true
        seq, id = 2, 1037
    end
    local next_seq = seq
    local count = 0
    while true do
        while inflight < M.WINDOW and next_seq <= max and not (opts.stop_after and count >= opts.stop_after) do
            send(next_seq)
            next_seq = next_seq + 1
        end
        if inflight == 0 then break end
        local r = assert(c:wait_push(id + 1, 10000))
        inflight = inflight - 1
        if r.error ~= 0 then return r end
        acked[r.seq] = true
        count = count + 1
        last = r
        if opts.stop_after and count >= opts.stop_after then
            last.acked = acked
            last.inflight = inflight
            return last
        end
    end
    last.acked = acked
    return last
end

-- upload_avatar(c, u) -> the last 1032 | the first with an error: stop-and-wait, each
-- next chunk built from the reply's fields (the first with token)
function M.upload_avatar(c, u)
    local total = #u.data
    local max = M.max_seq(total)
    local seq = 1
    while true do
        local chunk, through = piece(u.data, seq)
        local b = { md5 = u.md5 or "", name = u.name, seq = seq, trans_size = through,
            total_size = total, uid = u.uid, last = through >= total and 1 or 0,
            data = host.crypto.base64_encode(chunk), last_seq = max }
        if seq == 1 or u.always_token then b.token = u.token end
        local r = assert(c:request(1031, b))
        if r.error ~= 0 or r.trans_size == r.total_size then return r end
        seq = r.seq + 1
    end
end

-- download(c, id, body) -> the file's bytes | nil, the reply with an error: 1033 or 1047
-- stop-and-wait from seq 1 until is_last
function M.download(c, id, body)
    local parts, seq = {}, 1
    while true do
        body.seq = seq
        local r = assert(c:request(id, body))
        if r.error ~= 0 then return nil, r end
        assert(r.seq == seq, "reply seq " .. tostring(r.seq) .. " for " .. seq)
        parts[#parts + 1] = assert(host.crypto.base64_decode(r.data))
        if r.is_last == true then return table.concat(parts), r end
        assert(r.is_last == false, "is_last must be a JSON boolean")
        seq = seq + 1
    end
end

-- download_image(c, u, msg) -> bytes | nil, reply: 1047 as the client sends it after 1039
function M.download_image(c, u, msg)
    return M.download(c, 1047, { name = msg.name, trans_size = "0",
        total_size = msg.total_size or "0", token = u.token, sender_id = msg.sender_id,
        receiver_id = msg.receiver_id, message_id = msg.message_id, uid = u.uid })
end

-- download_avatar(c, u, name) -> bytes | nil, reply
function M.download_avatar(c, u, name)
    return M.download(c, 1033, { name = name, trans_size = 0, total_size = 0,
        token = u.token, uid = u.uid, client_path = "/tmp/x/" .. name, req_type = "other_icon" })
end

-- png(n) -> n bytes that are a PNG by their first bytes (the rest random)
function M.png(n)
    local parts, have = { "\137PNG\r\n\26\n" }, 8
    while have < n do
        local s = host.crypto.random_hex(math.min(4096, math.ceil((n - have) / 2)))
        s = s:sub(1, n - have)
        parts[#parts + 1] = s
        have = have + #s
    end
    return table.concat(parts):sub(1, n)
end

return M

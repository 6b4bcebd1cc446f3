-- resource.download: 1033 avatar chunks, 1045 an image's size, 1047 image chunks
-- (docs/protocol.md §13.5). Stateless: chunk seq is the bytes at (seq-1)*32768 of the
-- complete file, so nothing is kept per file name and any number of people download one
-- file at once. An avatar is any logged-in user's to fetch; an image only its message's
-- sender's and receiver's; neither before its upload is complete.
local host = require "host"
local errors = require "lib.errors"
local failure = require "lib.failure"
local images = require "lib.images"
local identity = require "resource.identity"
local tokens = require "lib.tokens"
local uploads = require "resource.uploads"
local upload = require "resource.upload"
local wire = require "resource.wire"

local M = {}

local ECHO_1033 = { "name", "client_path", "req_type", "seq" }
local ECHO_1045 = { "message_id" }
local ECHO_1047 = { "name", "seq", "sender_id", "receiver_id", "message_id" }

-- The complete upload of (kind, name) -> row | nil, code, field
function M.complete_upload(kind, name)
    local row, err = uploads.find(kind, name)
    if err then return nil, failure.code(err) end
    if not row then return nil, errors.FileNotFound, "name" end
    if row.state ~= uploads.COMPLETE then return nil, errors.UploadIncomplete, "name" end
    return row
end

-- The complete upload of image message msg (the name alone is not enough: another user's
-- message may carry the same name, and must not reach this file) -> row | nil, code, field
function M.image_upload(msg)
    local row, code, field = M.complete_upload(uploads.IMAGE, msg.content)
    if row and row.message_id ~= msg.message_id then return nil, errors.FileNotFound, "name" end
    return row, code, field
end

-- The file a session is downloading, kept in session.data (the host's: it outlives a
-- reload) between its chunks so that a chunk costs no database query and no open/close:
-- {key=, msg= (images), row=, f=, ahead=} (f: the object file, open for reading; ahead:
-- the next chunk being read). key names the
-- session's uid and what was asked for: the checks made for that uid hold as long as the
-- file is complete, and a complete upload's content never changes (its object's name
-- does once: an object stored before BLAKE3 is renamed at a start, resource.migrate; a
-- kept row whose object is not found is read again once, reopen). One per session.

-- drop(session): the kept download is forgotten and its file closed
local function drop(session)
    local d = session.data.download
    if not d then return end
    session.data.download = nil
    if d.f then d.f:close() end
end
M.on_close = drop

-- keep(session, key, row, msg?) -> the new kept download
local function keep(session, key, row, msg)
    drop(session)
    local d = { key = key, row = row, msg = msg }
    session.data.download = d
    return d
end

-- kept(session, key) -> the kept download of key | nil
local function kept(session, key)
    local d = session.data.download
    if d and d.key == key then return d end
    return nil
end

-- Read-ahead: while chunk seq of a kept download is sent, the next one is read (a task of
-- its own on the open file: d.ahead = {seq=, h=}), since the client asks for it as soon
-- as it has this one (stop-and-wait); a complete file never changes, so those bytes are
-- what a read then would give. A request for another seq reads as before. Chunks are read
-- as base64 (f:read_base64: encoded where they are read), the reply's data.

-- A chunk the page cache holds is read and encoded on the loop (host.file's read_cached),
-- so the read-ahead starts once this chunk's reply is on its way: its task sleeps 0 ms
-- first (the replies are written at the end of the loop's turn, the timer fires in the
-- next one), and the client's turn to ask for the next chunk overlaps the read.
-- ahead(d, seq, offset, n): chunk seq (n bytes at offset) of the kept file is read next
local function ahead(d, seq, offset, n)
    local f = d.f
    d.ahead = { seq = seq, h = host.spawn(function()
        host.timer.sleep(0)
        local ok, text, err = pcall(f.read_base64, f, offset, n) -- (closed meanwhile: dropped)
        if not ok then return nil, text end
        return text, err
    end) }
end

-- The read-ahead of chunk seq, if that is the one made -> base64 | nil, err | false (none)
local function read_ahead(d, seq)
    local a = d.ahead
    d.ahead = nil
    if not a or a.seq ~= seq then return false end
    local ok, data, err = a.h:wait()
    if not ok then return nil, data end
    return data, err
end

-- reopen(d) -> the kept download's object opened | nil, err: when it cannot be opened,
-- its row is read again once (kept since before its object was renamed, resource.migrate,
-- it names the old name) and, naming another object now, d.row takes it
local function reopen(d)
    local row = d.row
    local f, err = upload.store:open_object(row.hash)
    if f then return f end
    local now = uploads.find(row.kind, row.name)
    if not now or now.state ~= uploads.COMPLETE or now.upload_id ~= row.upload_id
        or now.hash == row.hash then
        return nil, err
    end
    d.row = now
    return upload.store:open_object(now.hash)
end

-- Fills reply with chunk seq of the kept download d (its file opened at its first chunk)
-- -> reply
local function chunk(session, reply, d, seq)
    local row = d.row
    local offset = (seq - 1) * wire.CHUNK
    local size = row.total_size
    if offset >= size then return wire.fail(reply, errors.BadChunk, "seq") end
    local n = math.min(wire.CHUNK, size - offset)
    local text, err = read_ahead(d, seq)
    local f = d.f
    if text == false then
        text = nil
        if not f then
            f, err = reopen(d)
            row = d.row
            if f and session.data.download == d then d.f = f end -- kept: open for the next chunks
        end
        if f then
            text, err = f:read_base64(offset, n)
            if f ~= d.f then f:close() end
        end
    end
    local whole = text and wire.decoded_length(text) == n
    if whole and d.f and session.data.download == d and offset + n < size then
        ahead(d, seq + 1, offset + n, math.min(wire.CHUNK, size - offset - n))
    end
    if not whole then
        host.log.warn("reading ", row.name, " (", row.hash, "): ", tostring(err or "short"))
        drop(session)
        return wire.fail(reply, errors.StorageFailed)
    end
    reply.seq = seq
    reply.data = text
    reply.total_size = tostring(size)
    reply.current_size = tostring(offset + n)
    reply.is_last = offset + n >= size
    return reply
end

-- 1033 {name, seq, uid, token, client_path, req_type} -> 1034: an avatar's chunk
function M.avatar(session, body)
    local reply = wire.echo(body, ECHO_1033)
    local uid, code, field = identity.who(session, body)
    if not uid then return wire.fail(reply, code, field) end
    if not images.valid_name(body.name) then return wire.fail(reply, errors.InvalidParams, "name") end
    local seq = wire.positive(body.seq)
    if not seq then return wire.fail(reply, errors.InvalidParams, "seq") end
    local key = uid .. " avatar " .. body.name
    local d = kept(session, key)
    if not d then
        local row
        row, code, field = M.complete_upload(uploads.AVATAR, body.name)
        if not row then return wire.fail(reply, code, field) end
        d = keep(session, key, row)
    end
    return chunk(session, reply, d, seq)
end

-- The image message message_id, if uid may see it -> row | nil, code, field
local function visible_message(uid, message_id)
    local id = wire.positive(message_id)
    if not id then return nil, errors.InvalidParams, "message_id" end
    local msg, err = images.get(id)
    if err then return nil, failure.code(err) end
    if not msg or msg.msg_type ~= 1 then return nil, errors.FileNotFound, "message_id" end
    if not images.participant(uid, msg) then return nil, errors.NotParticipant, "message_id" end
    return msg
end

-- The start of 1045 and 1047: the reply (echo), the session's image message body.message_id
-- names and its complete upload (kept for the session's next chunks)
-- -> reply, d {msg=, row=} | reply (with its error), nil
local function image_request(session, body, echo)
    local reply = wire.echo(body, echo)
    local uid, code, field = identity.who(session, body)
    if not uid then
        drop(session)
        return wire.fail(reply, code, field)
    end
    local id = wire.positive(body.message_id)
    local d = id and kept(session, uid .. " image " .. id)
    if not d then
        local msg
        msg, code, field = visible_message(uid, body.message_id)
        if not msg then return wire.fail(reply, code, field) end
        local row
        row, code, field = M.image_upload(msg)
        if not row then return wire.fail(reply, code, field) end
        if images.complete(msg) then
            d = keep(session, uid .. " image " .. msg.message_id, row, msg)
        else -- the message is marked ready just after its upload: its status not kept yet
            d = { row = row, msg = msg }
        end
    end
    if echo == ECHO_1047 and body.name ~= d.msg.content then
        return wire.fail(reply, errors.InvalidParams, "name")
    end
    return reply, d
end

-- A 1045 on a connection that has named no session, without a token: the S2 client sends
-- {message_id} alone for each image of a freshly loaded history, often as the first request
-- of its resource connection, and its token only in the 1047 that follows a 1046 (identity
-- and participant are checked there). It is answered as a participant's would be when the
-- connection comes from the address of the chat session of the message's sender or
-- receiver (lib.tokens.session_from); otherwise, and for an image not complete, 1014 as
-- for any anonymous request. -> reply | nil (not that case)
local function anonymous_info(session, body)
    if session.data.uid or (type(body.token) == "string" and body.token ~= "") then return nil end
    local reply = wire.echo(body, ECHO_1045)
    local id = wire.positive(body.message_id)
    local msg, err
    if id then msg, err = images.get(id) end
    if err then return wire.fail(reply, failure.code(err)) end
    if not msg or msg.msg_type ~= 1 then return wire.fail(reply, errors.NotLoggedIn) end
    local from = false
    for _, uid in ipairs({ msg.sender_id, msg.recv_id }) do
        local ok, ferr = tokens.session_from(uid, session.peer)
        if ok == nil then return wire.fail(reply, failure.code(ferr)) end
        from = from or ok
    end
    if not from then return wire.fail(reply, errors.NotLoggedIn) end
    local row = M.image_upload(msg)
    if not row then return wire.fail(reply, errors.NotLoggedIn) end
    return M.info_reply(reply, msg, row)
end

-- Fills a 1046 with image message msg and its complete upload row -> reply
function M.info_reply(reply, msg, row)
    reply.message_id = msg.message_id
    reply.thread_id = msg.thread_id
    reply.sender_id = msg.sender_id
    reply.recv_id = msg.recv_id
    reply.name = msg.content
    reply.msg_type = msg.msg_type
    reply.status = msg.status
    reply.total_size = tostring(row.total_size)
    return reply
end

-- 1045 {message_id} -> 1046 {message_id, thread_id, sender_id, recv_id, name, msg_type,
-- status, total_size}: what the client needs to download an image of its history
function M.info(session, body)
    local anonymous = anonymous_info(session, body)
    if anonymous then return anonymous end
    local reply, d = image_request(session, body, ECHO_1045)
    if not d then return reply end
    return M.info_reply(reply, d.msg, d.row)
end

-- 1047 {name, seq, sender_id, receiver_id, message_id, uid, token} -> 1048: an image's chunk
function M.image(session, body)
    local reply, d = image_request(session, body, ECHO_1047)
    if not d then return reply end
    local seq = wire.positive(body.seq)
    if not seq then return wire.fail(reply, errors.InvalidParams, "seq") end
    return chunk(session, reply, d, seq)
end

return M

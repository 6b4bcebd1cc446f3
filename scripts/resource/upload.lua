-- resource.upload: the upload requests (docs/protocol.md §13.4): 1031 avatar chunks,
-- 1041 an image's first chunk, 1037 its next chunks, 1043 a resumed chunk. Every chunk is
-- answered exactly once (the client's window of 5 counts on it) with its fields echoed and
-- a true error code. A chunk is written at its offset (seq-1)*32768 and marked in the
-- upload's Redis bitmap; the upload is complete when every chunk is marked (not when
-- `last` arrives), the file is the declared size and an allowed image by its first bytes:
-- then it is linked under its content's hash (lib.store), its rows are written, and the
-- avatar is the user's icon or the image message is ready (status 2, 1039 to the receiver).
local host = require "host"
local errors = require "lib.errors"
local failure = require "lib.failure"
local images = require "lib.images"
local store_lib = require "lib.store"
local identity = require "resource.identity"
local settings = require "resource.settings"
local uploads = require "resource.uploads"
local wire = require "resource.wire"

local M = {}

local store = store_lib.at(settings.dir)
M.store = store

-- The fields each reply echoes (s2-client.md §4, §6: the client takes its next chunk's
-- fields from them).
local ECHO = {
    [1031] = { "md5", "seq", "trans_size", "uid", "total_size", "name", "last_seq", "last" },
    [1041] = { "seq", "name", "last", "md5", "uid", "sender", "receiver", "message_id" },
    [1037] = { "total_size", "seq", "name", "trans_size", "last", "md5", "uid", "sender",
        "receiver", "last_seq" },
    [1043] = { "total_size", "seq", "name", "trans_size", "last", "md5", "uid", "sender",
        "receiver", "last_seq" },
}

-- A store or database failure that is not the client's doing: logged, answered.
local function trouble(reply, what, err)
    host.log.warn(what, ": ", tostring(err))
    return wire.fail(reply, failure.code(err))
end

-- The chat image message a 1041 names, checked: the session's own image message, still
-- uploading, under this name. -> row | nil, code, field
local function image_message(uid, message_id, name)
    local id = wire.positive(message_id)
    if not id then return nil, errors.InvalidParams, "message_id" end
    local msg, err = images.get(id)
    if err then return nil, failure.code(err) end
    if not msg or msg.msg_type ~= 1 then return nil, errors.FileNotFound, "message_id" end
    if msg.sender_id ~= uid then return nil, errors.PermissionDenied, "message_id" end
    if msg.content ~= name then return nil, errors.InvalidParams, "name" end
    return msg
end

-- The user's room for another upload of total bytes -> true | nil, code, field
local function room(uid, total)
    local used, running = uploads.usage(uid)
    if not used then return nil, failure.code(running) end
    if running >= settings.max_uploads then return nil, errors.QuotaExceeded, "uploads" end
    if used + total > settings.quota_bytes then return nil, errors.QuotaExceeded, "total_size" end
    return true
end

-- The upload this chunk belongs to, created by a transfer's first request (1031 seq 1,
-- 1041) -> row | nil, code, field
local function upload_of(kind, uid, c, body, may_create)
    for _ = 1, 2 do
        local row, err = uploads.find(kind, c.name)
        if err then return nil, failure.code(err) end
        if row then
            if row.owner_uid ~= uid then return nil, errors.NameTaken, "name" end
            if row.state == uploads.FAILED and may_create and c.seq == 1 then
                local ok, code, field = room(uid, c.total)
                if not ok then return nil, code, field end
                local restarted, rerr = uploads.restart(row, c.total, c.md5)
                if not restarted then return nil, failure.code(rerr) end
                store:remove_partial(row.upload_id) -- nothing of the old attempt is kept
            end
            if row.state == uploads.FAILED then return nil, errors.FileNotFound, "name" end
            if row.total_size ~= c.total then return nil, errors.BadChunk, "total_size" end
            return row
        end
        if not may_create then return nil, errors.FileNotFound, "name" end
        local message_id
        if kind == uploads.IMAGE then
            local msg, code, field = image_message(uid, body.message_id, c.name)
            if not msg then return nil, code, field end
            message_id = msg.message_id
        end
        local ok, code, field = room(uid, c.total)
        if not ok then return nil, code, field end
        local created, cerr = uploads.create { kind = kind, name = c.name, owner_uid = uid,
            message_id = message_id, total_size = c.total, md5 = c.md5 }
        if created then return created end
        if cerr ~= "exists" then return nil, failure.code(cerr) end
        -- another request created it meanwhile: found on the second round
    end
    return nil, errors.Internal
end

-- What completion does for each kind once the file and its rows are in place.
local function announce(row)
    if row.kind == uploads.AVATAR then
        local res, err = host.db.exec("UPDATE user SET icon = ? WHERE uid = ?", row.name, row.owner_uid)
        if not res then host.log.warn("icon of uid ", row.owner_uid, ": ", tostring(err)) end
        return
    end
    local ok, err = images.mark_complete(row.message_id)
    if not ok then
        host.log.warn("image message ", row.message_id, " complete: ", tostring(err))
        return
    end
    local msg, gerr = images.get(row.message_id)
    if not msg then
        host.log.warn("image message ", row.message_id, ": ", tostring(gerr or "gone"))
        return
    end
    images.notify_ready(msg, row.total_size)
end

-- complete(row) -> true | nil, code: the last chunk is in. One request completes an
-- upload; a concurrent one (the same upload on two connections) just acks its chunk.
local function complete(row)
    local mine, cerr = uploads.claim(row.upload_id)
    if mine == nil then return nil, failure.code(cerr) end
    if not mine then return true end
    local obj, err, kind = store:commit(row.upload_id, row.total_size, settings.image_types)
    if not obj then
        uploads.release(row.upload_id, false)
        host.log.warn("upload ", row.upload_id, " (", row.name, ") not complete: ", tostring(err))
        if kind == "storage" then return nil, errors.StorageFailed end
        uploads.fail(row.upload_id) -- wrong size or type: given up, its data removed
        store:remove_partial(row.upload_id)
        return nil, kind == "type" and errors.FileTypeRefused or errors.BadChunk
    end
    local ok, derr = uploads.complete(row.upload_id, obj)
    if not ok then
        uploads.release(row.upload_id, false)
        host.log.warn("upload ", row.upload_id, " rows: ", tostring(derr))
        return nil, failure.code(derr)
    end
    uploads.release(row.upload_id, true)
    store:remove_partial(row.upload_id)
    host.log.info("upload ", row.upload_id, " complete: ", row.name, ", ", row.total_size,
        " bytes, sha256 ", obj.sha256)
    announce(row)
    return true
end

-- handle(id, kind, may_create) -> the handler of one upload message
local function handler(id, kind, may_create)
    return function(session, body)
        local reply = wire.echo(body, ECHO[id])
        local uid, code, field = identity.who(session, body)
        if not uid then return wire.fail(reply, code, field) end
        local c
        c, code, field = wire.chunk(body, settings.max_file_bytes)
        if not c then return wire.fail(reply, code, field) end
        if c.seq == 1 and not store_lib.sniff(c.data, settings.image_types) then
            return wire.fail(reply, errors.FileTypeRefused, "data")
        end
        local row
        row, code, field = upload_of(kind, uid, c, body, may_create and (id ~= 1031 or c.seq == 1))
        if not row then return wire.fail(reply, code, field) end
        if row.state == uploads.COMPLETE then return reply end -- a resent chunk: already whole
        local ok, err = store:write_part(row.upload_id, c.offset, c.data)
        if not ok then
            host.log.warn("upload ", row.upload_id, " chunk ", c.seq, ": ", tostring(err))
            return wire.fail(reply, errors.StorageFailed)
        end
        local have, merr = uploads.mark(row.upload_id, c.seq, settings.upload_ttl_s)
        if not have then return trouble(reply, "chunk bitmap of upload " .. row.upload_id, merr) end
        if have >= c.max_seq then
            local done, dcode = complete(row)
            if not done then return wire.fail(reply, dcode) end
        end
        return reply
    end
end

M.avatar = handler(1031, uploads.AVATAR, true)      -- -> 1032
M.first = handler(1041, uploads.IMAGE, true)        -- -> 1042
M.next = handler(1037, uploads.IMAGE, false)        -- -> 1038
M.resume = handler(1043, uploads.IMAGE, false)      -- -> 1044

return M

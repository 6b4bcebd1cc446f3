-- resource.upload: the upload requests (docs/protocol.md §13.4): 1031 avatar chunks,
-- 1041 an image's first chunk, 1037 its next chunks, 1043 a resumed chunk. Every chunk is
-- answered exactly once (the client's window of 5 counts on it) with its fields echoed and
-- a true error code. A chunk is written at its offset (seq-1)*32768 and tallied (lib.store:
-- a byte per chunk after the data in the partial file, set by the same pool job once the
-- bytes are written); the upload is complete when every chunk is tallied (not when
-- `last` arrives), the file is the declared size and an allowed image by its first bytes:
-- then it is linked under its content's hash (lib.store), its rows are written, and the
-- avatar is the user's icon or the image message is ready (status 2, 1039 to the receiver).
local host = require "host"
local errors = require "lib.errors"
local failure = require "lib.failure"
local images = require "lib.images"
local sql = require "lib.sql"
local store_lib = require "lib.store"
local identity = require "resource.identity"
local migrate = require "resource.migrate"
local settings = require "resource.settings"
local uploads = require "resource.uploads"
local wire = require "resource.wire"

local M = {}

local store = store_lib.at(settings.dir)
M.store = store
-- transactions this module holds open while it waits for something else: completions'
-- rows while their file is committed (prepared_rows), new uploads' rows while their checks
-- run (upload_of's creation): {n = ...}, at most mysql.pool_size - 2 (the pool's other
-- connections are for the statements they wait for, and everyone else's)
local holding = host.keep("resource.upload.prepared.v1")
holding.n = holding.n or 0

-- held() -> true: one more transaction is held open (then release it with letgo) | false
local function held()
    if holding.n >= host.config.mysql.pool_size - 2 then return false end
    holding.n = holding.n + 1
    return true
end
local function letgo() holding.n = holding.n - 1 end

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

-- waited(task) -> what the task returned; its error raised again
local function waited(task)
    local res = { task:wait() }
    if not res[1] then error(res[2], 0) end
    return unpack(res, 2, 4)
end

-- The checks a new upload must pass (its image message, the user's room), each a database
-- round trip, started at once (with the row's INSERT, by the caller) -> a function that
-- waits for them -> true | nil, code, field (the first failing one, in that order)
local function checks_of(kind, uid, c, body)
    local msg = kind == uploads.IMAGE and host.spawn(image_message, uid, body.message_id, c.name)
    local space = host.spawn(room, uid, c.total)
    return function()
        if msg then
            local m, code, field = waited(msg)
            if not m then return nil, code, field end
        end
        return waited(space)
    end
end

-- The upload this chunk belongs to, created by a transfer's first request (1031 seq 1,
-- 1041) -> row | nil, code, field. A row created here may not be committed yet: its
-- creation (row.creation, resource.uploads) commits it, and the caller waits for that
-- (created) before its reply.
local function upload_of(kind, uid, c, body, may_create)
    local u = { kind = kind, name = c.name, owner_uid = uid, total_size = c.total, md5 = c.md5,
        message_id = kind == uploads.IMAGE and wire.positive(body.message_id) or nil }
    for round = 1, 2 do
        -- a transfer's first chunk most often starts a new upload: its checks and its row's
        -- INSERT start at once, and the row is looked up only when its name is taken
        local first = round == 1 and may_create and c.seq == 1
        local checks = first and checks_of(kind, uid, c, body)
        local creation = first and held() and uploads.begin_create(u, checks, letgo)
        if creation then
            local created, cerr = creation:row()
            if created then
                local ok, code, field = creation:checked() -- (committed while the caller
                -- writes the chunk; rolled back when refused)
                if not ok then return nil, code, field end
                created.creation = creation
                return created
            end
            if cerr ~= "exists" then return nil, failure.code(cerr) end
        end
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
        local ok, code, field = (checks or checks_of(kind, uid, c, body))()
        if not ok then return nil, code, field end
        local created, cerr = uploads.create(u) -- (no transaction held open: created now)
        if created then return created end
        if cerr ~= "exists" then return nil, failure.code(cerr) end
        -- another request created it meanwhile: found on the second round
    end
    return nil, errors.Internal
end

-- What completion does for each kind, in the transaction of its rows (uploads.complete's
-- also: one COMMIT for all): the avatar becomes the user's icon; the image message becomes
-- ready -> true: an image message to announce | nil (none, or it was not uploading any
-- more, or is gone).
local function completes(row)
    return function(q)
        if row.kind == uploads.AVATAR then
            sql.must(q.exec("UPDATE user SET icon = ? WHERE uid = ?", row.name, row.owner_uid))
            return nil
        end
        if not sql.must(images.mark_complete(row.message_id, q)) then
            host.log.warn("image message ", row.message_id, " was not uploading any more")
            return nil
        end
        return true
    end
end

-- After the reply: the receiver hears of a ready image (ready: completes' value; the
-- message is read for the 1039 now, not in the rows' transaction, whose COMMIT the reply
-- waits for).
local function announce(row, ready)
    if not ready then return end
    local msg, err = images.get(row.message_id)
    if msg then
        images.notify_ready(msg, row.total_size)
    else
        host.log.warn("1039 of message ", row.message_id, " not sent: ", tostring(err or "gone"))
    end
end

-- The upload a session is writing, kept in session.data (the host's: it outlives a
-- reload) between its chunks so that a chunk costs no database query and no open/close:
-- {kind=, name=, uid=, row=, token=, at=, f=, completing=} (f: its partial file, open for
-- writing, handed to the completion when it begins: completing then, until it ends). One
-- per session (the client sends one file at a time per connection), so open partials are
-- bounded by the connections and, process-wide, by file.max_open. Used only while the
-- token from resource.uploads is valid: any state change of the row in this process
-- (completion here or on another connection, expiry, restart) drops it, and the row is
-- read again; and for resource.session_recheck_ms from when it was read (at), so that a
-- change made elsewhere (another process, by hand) is seen within that time.

-- detach(session) -> its kept file | nil: the kept upload forgotten, its file handed over
local function detach(session)
    local u = session.data.upload
    if not u then return nil end
    session.data.upload = nil
    local f = u.f
    u.f = nil
    return f
end

-- drop(session): the kept upload is forgotten and its file closed
local function drop(session)
    local f = detach(session)
    if f then f:close() end
end

-- kept(session, kind, uid, name) -> the kept upload if still good for this chunk | nil
-- (while it completes, whatever its token says: the completion's claim drops the token, and
-- a resend then goes in flight, answered after it, in_flight)
local function kept(session, kind, uid, name)
    local u = session.data.upload
    if not u then return nil end
    if u.kind == kind and u.name == name and u.uid == uid and (u.completing
        or uploads.valid(kind, name, u.token)
        and host.timer.monotonic() - u.at < settings.session_recheck_ms) then
        return u
    end
    drop(session)
    return nil
end

-- The rows of row's completion prepared while its file is committed, a transaction begun
-- with the completion (completes' statements while the file is checked and the claim
-- asked for: a request of another process that wins the claim leaves this one's rolled
-- back, the image message's row locked meanwhile; the upload's once it is named,
-- lib.store's on_named, while it is linked and synced) that holds a database connection
-- meanwhile (held: at most mysql.pool_size - 2 at once with the new uploads' rows; beyond,
-- the rows after the link) -> on_named, settle(linked) -> true, completes' value | nil,
-- err (that transaction's end: committed when linked, else rolled back) | nil (none was
-- prepared). settle must follow, whatever happens (until then the transaction waits).
local function prepared_rows(row)
    if not held() then return function() end, function() return nil end end
    local named, linked = host.promise(), host.promise()
    local rows = host.spawn(function()
        local res = { pcall(uploads.complete, row.upload_id, function()
            return (named:wait(uploads.NAMED_WAIT_MS))
        end, linked, completes(row)) }
        letgo()
        if not res[1] then error(res[2], 0) end
        return unpack(res, 2, 4)
    end)
    local function on_named(obj) named:resolve(obj) end
    local function settle(ok)
        named:resolve(false) -- (never named: rolled back)
        linked:resolve(ok)
        local ran, done, res = rows:wait()
        if not ran then return nil, tostring(done) end
        if done then return true, res end
        return nil, tostring(res)
    end
    return on_named, settle
end

-- Uploads a request of this process is completing: upload_id -> true (in the host: a
-- reload keeps it). A second request completing one (the same upload on two connections)
-- just acks its chunk.
local completing = host.keep("resource.upload.completing.v1")

-- complete_mine(row, cut, hashed) -> true | nil, code: complete's work, the only one of
-- this process for row. The upload's claim (uploads.claim: against a request of another
-- process) is asked for at once and waited for only before the partial is changed (the
-- commit's ready): meanwhile the partial is sealed and checked, and the rows' transaction
-- begun.
local COMPLETION_HELP = "Completed uploads: the file's commit (checked, cut, named, linked, "
    .. "synced), then the wait for the rows' COMMIT after it (docs/protocol.md §13.6)."
local function complete_mine(row, cut, hashed)
    local id = row.upload_id
    local claiming = host.spawn(uploads.claim, row)
    -- -> true (this request completes the upload) | false (another one does) | nil, err
    local function claimed()
        local ran, mine, cerr = claiming:wait()
        if not ran then error(mine, 0) end
        return mine, cerr
    end
    local t1 = host.timer.monotonic()
    local on_named, settle = prepared_rows(row)
    local res = { pcall(store.commit, store, id, row.total_size, settings.image_types, hashed,
        not cut and wire.max_seq(row.total_size) or 0, on_named, claimed) }
    local t2 = host.timer.monotonic()
    -- (not linked: its rows roll back; derr: completes' value when committed); the
    -- partial's own name goes meanwhile (its cut name stays until the rows are committed)
    local named = res[1] and res[2] ~= nil
    local unnamed = named and host.spawn(store.unname_partial, store, id)
    local ok, derr = settle(named)
    local unnamed_ok = true
    if unnamed then
        local ran, gone = unnamed:wait()
        unnamed_ok = ran and gone
    end
    local mine, cerr = claimed() -- (a commit that failed before asking: known now)
    if mine == nil then return nil, failure.code(cerr) end
    if not mine then return true end
    if not res[1] then
        uploads.release(id)
        error(res[2], 0)
    end
    local obj, err, kind = res[2], res[3], res[4]
    if not obj then
        uploads.release(id)
        host.log.warn("upload ", id, " (", row.name, ") not complete: ", tostring(err))
        if kind == "storage" then return nil, errors.StorageFailed end
        uploads.fail(row) -- wrong size or type: given up, its data removed
        store:remove_partial(id)
        return nil, kind == "type" and errors.FileTypeRefused or errors.BadChunk
    end
    if not ok then -- (not prepared, or its transaction failed: the object is linked now)
        if derr then host.log.warn("upload ", id, " rows prepared: ", derr, "; again") end
        ok, derr = uploads.complete(id, obj, nil, completes(row))
    end
    if not ok then
        uploads.release(id)
        host.log.warn("upload ", id, " rows: ", tostring(derr))
        return nil, failure.code(derr)
    end
    local t3 = host.timer.monotonic()
    host.log.info("upload ", id, " complete: ", row.name, ", ", row.total_size, " bytes, blake3 ",
        obj.hash, (" (file %.1f ms, rows %.1f ms)"):format(t2 - t1, t3 - t2))
    host.metrics.observe("chathost_resource_completion_seconds", (t2 - t1) / 1000,
        { phase = "file" }, COMPLETION_HELP)
    host.metrics.observe("chathost_resource_completion_seconds", (t3 - t2) / 1000,
        { phase = "rows" }, COMPLETION_HELP)
    -- the rows are committed (the icon or the image message's state with them): the
    -- sender's reply need not wait for the claim's release (the row's state answers a late
    -- chunk now), the partial's cut name or the 1039; they follow in a task of their own
    local ready = derr
    host.spawn(function()
        -- (first: left by an end of the process from here on, the cut's name would stay,
        -- the upload being complete; and the partial's own, if its removal failed)
        if unnamed_ok then store:remove_cut(id) else store:remove_partial(id) end
        uploads.release(id)
        announce(row, ready)
    end)
    return true
end

-- complete(session, row) -> true | nil, code: the last chunk is in. One request completes
-- an upload; a concurrent one (the same upload on two connections) just acks its chunk.
-- The announcement (announce: the 1039) runs after the rows are committed, in a task of
-- its own.
local function complete(session, row, cut)
    local u = session.data.upload
    local hashed -- the partial is linked as the object next: no descriptor may write to it;
    -- the kept one goes to the commit (its running hash may name the file), closed there;
    -- the kept upload stays (completing) until the completion ends, so that a resend of
    -- this connection goes in flight meanwhile, answered after the completion (in_flight)
    if u and u.row.upload_id == row.upload_id then
        hashed, u.f, u.completing = u.f, nil, true
    else
        u = nil
    end
    local res = { true, true } -- (another request of this process completes it: acked)
    if completing[row.upload_id] then
        if hashed then hashed:close() end
    else
        completing[row.upload_id] = true
        res = { pcall(complete_mine, row, cut, hashed) }
        completing[row.upload_id] = nil
    end
    if u and session.data.upload == u then session.data.upload = nil end -- (its file is gone)
    if not res[1] then error(res[2], 0) end
    return res[2], res[3]
end

-- created(session, u) -> true | nil, code: the row of an upload this request created
-- (upload_of) is committed; if it is not, the chunk written for it goes with its partial
local function created(session, u)
    local creation = u.row.creation
    if not creation then return true end
    u.row.creation = nil
    local ok, err = creation:wait()
    if ok then return true end
    host.log.warn("upload ", u.row.upload_id, " (", u.name, ") not created: ", tostring(err))
    drop(session)
    uploads.changed(u.kind, u.name)
    store:remove_partial(u.row.upload_id)
    return nil, failure.code(err)
end

-- The upload of a chunk, kept or read (and then kept when it is still uploading and no
-- state changed while it was read) -> u ({row=} at least) | nil, code, field
local function upload_for(session, kind, uid, c, body, may_create)
    local u = kept(session, kind, uid, c.name)
    if u and u.row.creation then -- (its first chunk's handler ended before it waited)
        local made, code = created(session, u)
        if not made then return nil, code end
    end
    if u then
        if u.row.total_size ~= c.total then return nil, errors.BadChunk, "total_size" end
        return u
    end
    local epoch, at = uploads.epoch(), host.timer.monotonic()
    local row, code, field = upload_of(kind, uid, c, body, may_create)
    if not row then return nil, code, field end
    if row.state ~= uploads.UPLOADING then return { row = row } end
    u = { kind = kind, name = c.name, uid = uid, row = row, at = at }
    if uploads.epoch() == epoch then
        drop(session)
        u.token = uploads.token(kind, c.name)
        session.data.upload = u
    end
    return u
end

-- The tally of chunk c of the upload row (lib.store: where its byte is, and the region)
local function tally(row, c)
    return store_lib.tally(row.total_size, c.seq, c.max_seq)
end

-- write(session, u, c) -> true, tallied | nil, err[, "changed"]: the chunk at its offset
-- and its tally byte, through the kept file (opened at the kept upload's first chunk) or,
-- for an upload not kept, opened and closed; tallied: the chunks tallied after it (nil:
-- the partial is sealed, the upload being completed: this chunk's bytes are there already)
local function write(session, u, c)
    -- (a sealed partial, being completed: write_part skips the chunk, a resend, and opens
    -- nothing; a kept file would be made again after the commit removed its name)
    if session.data.upload ~= u or store_lib.sealed(u.row.upload_id) then
        return store:write_part(u.row.upload_id, c.offset, c.data, tally(u.row, c))
    end
    if not u.f then
        local f, err = store:open_part(u.row.upload_id)
        if not f then
            drop(session)
            return nil, err
        end
        if session.data.upload ~= u or not uploads.valid(u.kind, u.name, u.token) then
            f:close() -- the row changed while the file was opened: not this file any more
            return nil, "upload changed", "changed"
        end
        -- a running BLAKE3 of the chunks as they are written (the commit's, lib.store);
        -- chunks finish out of order within the ones in flight: so many may wait their turn
        f:hash_start(settings.max_chunks_in_flight)
        u.f = f
    end
    if not uploads.valid(u.kind, u.name, u.token) then -- its row changed (completed?) meanwhile
        drop(session)
        return nil, "upload changed", "changed"
    end
    local ok, res = store.write_guarded(u.row.upload_id, u.f.write, u.f, c.offset, c.data,
        tally(u.row, c))
    if not ok then drop(session) end
    return ok, res
end

-- Chunks in flight (docs/protocol.md §13.4): a chunk of the upload a connection keeps, its
-- file open, is written and tallied by a task of its own (host.spawn), so that the
-- connection's next chunk is read, checked and written while this one's write is still
-- under way (the client keeps 5 in flight). Each task waits for the one before it (the
-- chain) before it completes the upload or sends its reply: the replies leave in the
-- order of the requests, and a completion comes after every earlier chunk of the
-- connection is written. A chunk's tally byte is set (by its own pool job) only once its
-- bytes are written, and its reply is sent only once both are. session.data.chain is the
-- newest task; session.data.in_flight counts them (at most resource.max_chunks_in_flight:
-- the next chunk waits for them all first).

-- settle(session): every chunk task of the connection has sent its reply
local function settle(session)
    local newest = session.data.chain
    if newest and not newest:done() then newest:wait() end
end

-- After the write of chunk c of upload u (ok, err; tallied: the chunks tallied after it):
-- the wait for the earlier chunks (prev: the task before), the completion when every chunk
-- is tallied -> reply
local function finish(session, u, c, reply, ok, err, prev, tallied)
    local row = u.row
    if prev then prev:wait() end
    if not ok then
        host.log.warn("upload ", row.upload_id, " chunk ", c.seq, ": ", tostring(err))
        return wire.fail(reply, errors.StorageFailed)
    end
    if not tallied or tallied < c.max_seq then return reply end
    if u.token and not uploads.valid(u.kind, u.name, u.token) then
        -- completed meanwhile by an earlier chunk (this one was resent): nothing to do
        local now, ferr = uploads.find(u.kind, u.name)
        if ferr then return trouble(reply, "upload " .. row.upload_id, ferr) end
        if now and now.state == uploads.COMPLETE then return reply end
    end
    -- in a task of its own: a handler past resource.handler_timeout_ms is abandoned (1019),
    -- the completion it began is not (it ends as if the handler had waited)
    local done, dcode = waited(host.spawn(complete, session, row))
    if not done then return wire.fail(reply, dcode) end
    return reply
end

-- The task of one chunk in flight: its write (submitted in the task's first slice, while
-- the handler that spawned it still runs, so the kept file is open), then finish; the
-- reply is sent whatever happens (the client's window counts on it).
local function in_flight(session, id, u, c, reply, prev)
    local data = session.data
    local f = u.f
    local wrote, ok, err, code
    if not f then -- (being completed: every chunk is written and tallied, this one is a
        -- resend, answered after the completion as a write to its sealed partial would be)
        wrote, ok = true, true
    else
        local fn, bytes = f.write, c.data
        if c.b64 then fn, bytes = f.write_base64, c.b64 end
        -- (writes counted: a commit waits for them, lib.store)
        wrote, ok, err, code = pcall(store.write_guarded, u.row.upload_id, fn, f, c.offset,
            bytes, tally(u.row, c))
    end
    if not wrote then ok, err = nil, ok end
    local fine, res
    if not ok and code == "EINVAL" then -- not base64: nothing written, the file is fine
        fine, res = pcall(finish, session, u, c, reply, false, err, prev)
        res = fine and wire.fail(reply, errors.BadChunk, "data") or res
    else
        if not ok and data.upload == u then drop(session) end
        local tallied = ok and err or nil -- (the write's second result)
        fine, res = pcall(finish, session, u, c, reply, ok, not ok and err or nil, prev, tallied)
    end
    if not fine then
        host.log.error("upload ", u.row.upload_id, " chunk ", c.seq, ": ", tostring(res))
        res = wire.fail(reply, errors.Internal)
    end
    data.in_flight = data.in_flight - 1
    session:send(id + 1, res)
end

-- The chunk through the kept upload u by a task of its own, when u is still the session's
-- with its file open -> true (the task answers) | false (the handler goes on)
local function deferrable(data, u)
    return data.upload == u and (u.completing or u.f and uploads.valid(u.kind, u.name, u.token))
end

local function defer(session, id, u, c, reply)
    local data = session.data
    if not deferrable(data, u) then return false end
    if (data.in_flight or 0) >= settings.max_chunks_in_flight then
        settle(session) -- (it yields: the kept upload is checked again)
        if not deferrable(data, u) then return false end
    end
    data.in_flight = (data.in_flight or 0) + 1
    data.chain = host.spawn(in_flight, session, id, u, c, reply, data.chain)
    return true
end

-- handle(id, kind, may_create) -> the handler of one upload message
local function handler(id, kind, may_create)
    local function serve(session, body)
        migrate.wait() -- (the first moments after a start: uploads from before the tally)
        local reply = wire.echo(body, ECHO[id])
        local uid, code, field = identity.who(session, body)
        if not uid then
            drop(session)
            return wire.fail(reply, code, field)
        end
        -- a chunk likely to go in flight (the next one of the kept upload) is decoded as it
        -- is written, on the pool thread; any other here, before anything else is looked at
        local k = session.data.upload
        local undecoded = k ~= nil and k.f ~= nil and k.kind == kind and k.uid == uid
            and k.name == body.name and wire.positive(body.seq) ~= 1 -- (chunk 1: its type)
        local c
        c, code, field = wire.chunk(body, settings.max_file_bytes, undecoded)
        if not c then return wire.fail(reply, code, field) end
        if c.seq == 1 and not store_lib.sniff(c.data, settings.image_types) then
            return wire.fail(reply, errors.FileTypeRefused, "data")
        end
        local u
        for _ = 1, 2 do -- once more when the row changed while the file was opened
            u, code, field = upload_for(session, kind, uid, c, body,
                may_create and (id ~= 1031 or c.seq == 1))
            if not u then return wire.fail(reply, code, field) end
            if u.row.state == uploads.COMPLETE then return reply end -- a resent chunk: already whole
            if defer(session, id, u, c, reply) then return nil end
            settle(session) -- this chunk is written here, after the ones in flight
            if not c.data then
                c.data = host.crypto.base64_decode(c.b64)
                if not c.data then return wire.fail(reply, errors.BadChunk, "data") end
                c.b64 = nil
            end
            -- (in a task of its own, as a completion: a handler abandoned at its deadline
            -- would leave the partial's count of writes under way raised, lib.store)
            local ok, err, why = waited(host.spawn(write, session, u, c))
            local made, mcode = created(session, u)
            if not made then return wire.fail(reply, mcode) end
            if ok then return finish(session, u, c, reply, true, nil, nil, err) end
            if why ~= "changed" then return finish(session, u, c, reply, false, err) end
        end
        return wire.fail(reply, errors.Internal)
    end
    return function(session, body)
        local reply = serve(session, body)
        -- a reply given here follows the replies of the chunks still in flight
        if reply then settle(session) end
        return reply
    end
end

-- on_close(session): a kept partial file is closed with its connection
M.on_close = drop

-- finish_cut(row[, at_start]): an upload in progress whose completion was cut short by
-- the process's end between the cut of its tally and its rows (docs/protocol.md §13.6) is
-- finished when its partial (made again from the cut's name if the commit had removed its
-- own) is exactly its size, as its last chunk would have; a cut's name beside
-- a partial with its tally back goes. at_start: the claim left is the ended process's
-- (one process per storage root), released first; else (the sweeper) a live claim wins.
-- Without this, resent chunks would each tally one piece again and the upload would never
-- complete.
local function finish_cut(row, at_start)
    if completing[row.upload_id] then return end -- (a live completion's cut: its own)
    local cut_name, partial = store:cut_path(row.upload_id), store:partial_path(row.upload_id)
    local cut = host.file.stat(cut_name)
    if not cut then return end
    local st = host.file.stat(partial)
    local relinked, lerr = true, nil
    if not st and cut.size == row.total_size then -- (linked and its name removed)
        relinked, lerr = host.file.link(cut_name, partial)
        st = relinked and cut
    end
    if not relinked then -- (its only name now: kept for the next try)
        host.log.warn("upload ", row.upload_id, ": its cut partial not named again: ",
            tostring(lerr))
    elseif st and st.size == row.total_size then
        if at_start then uploads.release(row.upload_id) end
        local ok, done, code = pcall(complete, { data = {} }, row, true)
        host.log.warn("upload ", row.upload_id, " (", row.name, "): its completion, cut ",
            "short by the process's end, ",
            ok and done and "finished" or ("failed: " .. tostring(ok and code or done)))
    else
        host.file.unlink(cut_name)
    end
end
M.finish_cut = finish_cut

-- recover(): at the role's start, finish_cut for every upload in progress.
function M.recover()
    local rows, err = uploads.in_progress()
    if not rows then
        host.log.warn("completions cut short: ", tostring(err))
        return
    end
    for _, row in ipairs(rows) do finish_cut(row, true) end
end

M.avatar = handler(1031, uploads.AVATAR, true)      -- -> 1032
M.first = handler(1041, uploads.IMAGE, true)        -- -> 1042
M.next = handler(1037, uploads.IMAGE, false)        -- -> 1038
M.resume = handler(1043, uploads.IMAGE, false)      -- -> 1044

return M

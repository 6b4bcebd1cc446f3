-- resource.uploads: the `upload` and `file_object` tables (sql/004_files.sql) and the
-- Redis key of uploads in progress, the one owner of both: upload_commit_<id> (held while
-- one request completes the upload). Which chunks were received is the partial file's
-- tally (lib.store), not a record of its own.
local host = require "host"
local keys = require "lib.keys"
local errors = require "lib.errors"
local sql = require "lib.sql"

local M = {}

-- Uploads in progress whose row a session keeps (resource.upload): per (kind, name) a token
-- that every change of the row's state (restart, completion, expiry) drops, so a kept row
-- and its open partial file are used only while the token a session took is still there;
-- `epoch` counts those changes (a row read while one happened is not kept). In the host
-- (host.keep) so that a reload does not make kept rows look unchanged; entries exist only
-- for rows kept while uploading, and go with their upload's end.
local live = host.keep("resource.uploads.live.v1")

local function live_key(kind, name) return kind .. ":" .. name end

-- epoch() -> the count of state changes so far (compare before and after reading a row)
function M.epoch() return live.epoch or 0 end

-- token(kind, name) -> the current token of that upload (made when there is none)
function M.token(kind, name)
    local k = live_key(kind, name)
    local t = live[k]
    if not t then
        t = {}
        live[k] = t
    end
    return t
end

-- valid(kind, name, token) -> true while no state change happened since token was taken
function M.valid(kind, name, token) return live[live_key(kind, name)] == token end

-- changed(kind, name): the upload's row changes state; kept copies are stale from now on
function M.changed(kind, name)
    live[live_key(kind, name)] = nil
    live.epoch = M.epoch() + 1
end

M.AVATAR, M.IMAGE = 1, 2                        -- upload.kind
M.UPLOADING, M.COMPLETE, M.FAILED = 0, 1, 2     -- upload.state

-- rows(where, ...) -> the upload rows matching where (find's fields, NULLs as nil) | nil, err
local function rows(where, ...)
    local res, err = host.db.query("SELECT u.upload_id, u.kind, u.name, u.owner_uid, "
        .. "u.message_id, u.total_size, u.md5, u.state, LOWER(HEX(u.content_hash)) AS hash, "
        .. "f.mime FROM upload u LEFT JOIN file_object f ON f.content_hash = u.content_hash "
        .. "WHERE " .. where, ...)
    if not res then return nil, err end
    for _, row in ipairs(res) do
        for _, k in ipairs({ "hash", "message_id", "mime" }) do
            if row[k] == host.null then row[k] = nil end
        end
    end
    return res
end

-- find(kind, name) -> row {upload_id, kind, name, owner_uid, message_id?, total_size, md5,
-- state, hash? (hex BLAKE3, once complete), mime? (once complete)} | nil (none) | nil, err
function M.find(kind, name)
    local found, err = rows("u.kind = ? AND u.name = ?", kind, name)
    if not found then return nil, err end
    return found[1]
end

-- in_progress() -> the rows (as find's) of every upload in state 0 | nil, err
function M.in_progress()
    return rows("u.state = 0")
end

-- usage(uid) -> bytes of the user's uploads kept or in progress, unfinished uploads | nil, err
-- (idx_owner_usage, sql/007: read from the index alone)
M.USAGE_SQL = "SELECT COALESCE(SUM(total_size), 0) AS bytes, COALESCE(SUM(state = 0), 0) AS "
    .. "running FROM upload WHERE owner_uid = ? AND state IN (0, 1)"
function M.usage(uid)
    local rows, err = host.db.query(M.USAGE_SQL, uid)
    if not rows then return nil, err end
    return tonumber(rows[1].bytes), tonumber(rows[1].running)
end

-- begin_create({kind=, name=, owner_uid=, message_id=?, total_size=, md5=}, checks[,
-- on_end]) -> creation: the upload's row INSERTed at once in a transaction of its own, in
-- a task of its own, which then waits for checks() -> true | nil, code, field (the
-- caller's, started before: the checks a new upload must pass) and commits when they
-- pass, else rolls back; so the row is inserted while the checks run, and committed while
-- the caller writes the first chunk, whatever becomes of the caller meanwhile
-- (uncommitted, no other request sees it; one creating the same name waits for its end,
-- then finds it or creates it). It holds a database connection until then (the caller
-- bounds how many at once); on_end() is called when it has let it go.
--   creation:row() -> row | nil, "exists" (the name is taken, or a conflict was lost:
--     look again) | nil, err
--   creation:checked() -> checks' values (a raised error: nil, lib.errors.Internal)
--   creation:wait() -> true | nil, err, errno: committed
local Creation = {}
Creation.__index = Creation

-- insert(tx, u) -> exec's results: u's row INSERTed in the transaction tx, or (nil) alone
local INSERT = "INSERT INTO upload (kind, name, owner_uid, message_id, total_size, md5) "
    .. "VALUES (?, ?, ?, ?, ?, ?)"
local function insert(tx, u)
    local mid = u.message_id or host.null
    if tx then return tx:exec(INSERT, u.kind, u.name, u.owner_uid, mid, u.total_size, u.md5) end
    return host.db.exec(INSERT, u.kind, u.name, u.owner_uid, mid, u.total_size, u.md5)
end

-- The row of a new upload u (begin_create's argument) whose INSERT gave it upload_id
local function row_of(u, upload_id)
    return { upload_id = upload_id, kind = u.kind, name = u.name, owner_uid = u.owner_uid,
        message_id = u.message_id, total_size = u.total_size, md5 = u.md5, state = M.UPLOADING }
end

function M.begin_create(u, checks, on_end)
    local c = { inserted = host.promise(), checked_p = host.promise(), u = u }
    c.task = host.spawn(function()
        local ok, err, errno = host.db.tx(function(tx)
            local res, ierr, ierrno = insert(tx, u)
            if not res then sql.fail(ierr, ierrno) end
            c.inserted:resolve(res.insert_id)
            local ran, passed, code, field = pcall(checks)
            if not ran then
                host.log.warn("upload ", u.name, ": its checks failed: ", tostring(passed))
                passed, code = nil, errors.Internal
            end
            c.checked_p:resolve(passed, code, field)
            if not passed then sql.fail("the upload was refused") end
        end)
        -- (a failed BEGIN or INSERT: told to row(); else the COMMIT's end, to wait())
        local taken = errno == sql.ER_DUP_ENTRY or errno == sql.ER_LOCK_DEADLOCK
        c.inserted:resolve(nil, taken and "exists" or err)
        if on_end then on_end() end
        return ok, err, errno
    end)
    return setmetatable(c, Creation)
end

function Creation:row()
    local id, err = self.inserted:wait()
    if not id then return nil, err end
    return row_of(self.u, id)
end

function Creation:checked() return self.checked_p:wait() end

function Creation:wait()
    local ran, ok, err, errno = self.task:wait()
    if not ran then return nil, tostring(ok) end
    if not ok then return nil, err, errno end
    return true
end

-- create{...} (as begin_create's) -> row | nil, "exists" | nil, err: created at once
-- (one autocommit INSERT)
function M.create(u)
    local res, err, errno = insert(nil, u)
    if not res then
        if errno == sql.ER_DUP_ENTRY then return nil, "exists" end
        return nil, err
    end
    return row_of(u, res.insert_id)
end

-- restart(row, total_size, md5) -> true | nil, err: an expired or failed upload of the same
-- owner begins again (its chunks are forgotten with its partial file, by the caller).
function M.restart(row, total_size, md5)
    M.changed(row.kind, row.name)
    local res, derr = host.db.exec("UPDATE upload SET state = 0, total_size = ?, md5 = ?, "
        .. "received_bytes = 0 WHERE upload_id = ? AND state = 2", total_size, md5, row.upload_id)
    if not res then return nil, derr end
    row.state, row.total_size, row.md5 = M.UPLOADING, total_size, md5
    return true
end

-- claim(row) -> true (this request completes it) | false (another one is) | nil, err
function M.claim(row)
    local res, err = host.redis.call("SET", keys.upload_commit(row.upload_id), "1", "EX", 300, "NX")
    if res == nil and err then return nil, err end
    local mine = res ~= nil and res ~= host.null
    if mine then M.changed(row.kind, row.name) end
    return mine
end

-- release(upload_id): the completion is over (done or failed)
function M.release(upload_id)
    host.redis.call("DEL", keys.upload_commit(upload_id))
end

-- complete(upload_id, obj[, linked[, also]]) -> true, also's value | nil, err, errno: the
-- content's row (kept once) and the upload's state, in one transaction. also(q): the
-- completion's other statements, run first (q: lib.sql's runner; sql.fail rolls back all
-- of it); its value is returned once committed. obj = {hash=, size=, mime=} from
-- lib.store, or a function that waits for it (nil: not named, rolled back): so that the
-- transaction can begin before the file is named. linked: a promise the transaction waits
-- for after its statements, before its COMMIT (they run while the file is linked and
-- synced): resolved true it commits; false, or not within NAMED_WAIT_MS, it rolls back.
M.NAMED_WAIT_MS = 30000
function M.complete(upload_id, obj, linked, also)
    local res, err, errno = sql.tx(function(q)
        local value = also and also(q)
        local o = obj
        if type(obj) == "function" then o = obj() end
        if type(o) ~= "table" then sql.fail("the file was not named") end
        sql.must(q.exec("INSERT IGNORE INTO file_object (content_hash, algo, size, mime) "
            .. "VALUES (UNHEX(?), 1, ?, ?)", o.hash, o.size, o.mime))
        sql.must(q.exec("UPDATE upload SET state = 1, content_hash = UNHEX(?), "
            .. "received_bytes = total_size WHERE upload_id = ? AND state = 0", o.hash, upload_id))
        if linked and linked:wait(M.NAMED_WAIT_MS) ~= true then sql.fail("the file was not named") end
        return { value = value }
    end)
    if not res then return nil, err, errno end
    return true, res.value
end

-- fail(row) -> true | nil, err: an upload given up (expired, refused content); row =
-- {upload_id=, kind=, name=}
function M.fail(row)
    local upload_id = row.upload_id
    M.changed(row.kind, row.name)
    local res, err = host.db.exec("UPDATE upload SET state = 2 WHERE upload_id = ? AND state = 0",
        upload_id)
    if not res then return nil, err end
    return res.affected > 0
end

-- stale(ttl_s, limit) -> {upload_id=, kind=, name=} of unfinished uploads whose row was not
-- touched for ttl_s, at most limit, oldest first | nil, err
function M.stale(ttl_s, limit)
    return host.db.query("SELECT upload_id, kind, name FROM upload WHERE state = 0 AND "
        .. "updated_at < NOW() - INTERVAL ? SECOND ORDER BY updated_at LIMIT ?", ttl_s, limit)
end

-- touch(upload_id): the row's updated_at is now (an upload still receiving chunks)
function M.touch(upload_id)
    return host.db.exec("UPDATE upload SET updated_at = NOW() WHERE upload_id = ? AND state = 0",
        upload_id)
end

return M

-- lib.messages: the chat_message table (sql/001_schema.sql): pages of a thread by
-- message_id, inserts of many rows at once for the chat role's group commit (chat.batch),
-- and of one row in a caller's transaction (lib.friends' greetings). A multi-row INSERT
-- gets ids in a known order only when InnoDB allocates them in one go
-- (innodb_autoinc_lock_mode <= 1): the first row's, then one auto_increment_increment
-- apart (3 on a 3-node Galera cluster, whose nodes interleave them). Under lock mode 2,
-- which Galera needs, nothing promises that: the INSERT runs in a transaction that reads
-- its rows back at those ids and inserts row by row instead when any is not its own.
-- Nothing assumes that ids of consecutive messages are consecutive numbers: pages and
-- "newer than" go by message_id order.
local host = require "host"
local sql = require "lib.sql"

local M = {}

M.STATUS_READ = 2 -- every stored message: the original's "read" (client MsgStatus READED)

local COLUMNS =
    "(thread_id, sender_id, recv_id, content, unique_id, created_at, updated_at, status, msg_type)"
local ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
local INSERT_ONE = "INSERT INTO chat_message " .. COLUMNS .. " VALUES " .. ROW

-- page(thread_id, cursor, limit) -> rows {message_id, thread_id, sender_id, recv_id,
-- content, created_at, status, msg_type} with message_id > cursor, ascending | nil, err
function M.page(thread_id, cursor, limit)
    return host.db.query([[
SELECT message_id, thread_id, sender_id, recv_id, content, created_at, status, msg_type
FROM chat_message WHERE thread_id = ? AND message_id > ? ORDER BY message_id LIMIT ?]],
        thread_id, cursor, limit)
end

local function params(rows, first, last)
    local p = {}
    for i = first, last do
        local r = rows[i]
        local n = #p
        p[n + 1], p[n + 2], p[n + 3], p[n + 4] = r.thread_id, r.sender_id, r.recv_id, r.content
        p[n + 5] = r.unique_id or host.null -- NULL: no unique_id, never a duplicate
        p[n + 6], p[n + 7] = r.created_at, r.created_at
        p[n + 8], p[n + 9] = r.status, r.msg_type or 0
    end
    return p
end

-- id_step() -> the distance between the ids of a multi-row INSERT's rows
-- (auto_increment_increment) when InnoDB allocates them in one go | false (it does not:
-- innodb_autoinc_lock_mode 2, interleaved) | nil, err
function M.id_step()
    local rows, err = host.db.query(
        "SELECT @@innodb_autoinc_lock_mode AS mode, @@auto_increment_increment AS step")
    if not rows then return nil, err end
    return tonumber(rows[1].mode) <= 1 and tonumber(rows[1].step)
end

-- insert_multi(rows, step) -> array of message ids, in row order | nil, err, errno
-- One multi-row INSERT (autocommit): only when id_step() gave step.
function M.insert_multi(rows, step)
    local values = {}
    for i = 1, #rows do values[i] = ROW end
    local res, err, errno = host.db.exec("INSERT INTO chat_message " .. COLUMNS .. " VALUES "
        .. table.concat(values, ", "), unpack(params(rows, 1, #rows)))
    if not res then return nil, err, errno end
    if res.affected ~= #rows then return nil, "inserted " .. tostring(res.affected) .. " rows" end
    local ids = {}
    for i = 1, #rows do ids[i] = res.insert_id + (i - 1) * step end -- insert_id: the first row's
    return ids
end

local INTERLEAVED = "the INSERT's ids interleaved with another statement's"

-- Is the stored row r (columns as insert_checked reads them) the row given as row?
local function same_row(r, row)
    return r ~= nil and r.thread_id == row.thread_id and r.sender_id == row.sender_id
        and r.recv_id == row.recv_id and r.content == row.content and r.unique_id == row.unique_id
end

-- insert_checked(rows) -> array of message ids, in row order | false (ids not known: insert
-- row by row) | nil, err, errno
-- For innodb_autoinc_lock_mode 2 (Galera): in one transaction, the session's step, one
-- multi-row INSERT, and its rows read back at the first id + (i - 1) * step; committed
-- only when every one is this statement's row (a row of a concurrent statement there is
-- not, or is not yet visible), else rolled back.
function M.insert_checked(rows)
    local ids, err, errno = host.db.tx(function(tx)
        local step = sql.must(tx:query("SELECT @@auto_increment_increment AS step"))[1].step
        local values = {}
        for i = 1, #rows do values[i] = ROW end
        local res = sql.must(tx:exec("INSERT INTO chat_message " .. COLUMNS .. " VALUES "
            .. table.concat(values, ", "), unpack(params(rows, 1, #rows))))
        local out = {}
        for i = 1, #rows do out[i] = res.insert_id + (i - 1) * step end
        local got = sql.must(tx:query("SELECT message_id, thread_id, sender_id, recv_id, content,"
            .. " unique_id FROM chat_message WHERE message_id IN ("
            .. ("?, "):rep(#out - 1) .. "?)", unpack(out)))
        local by_id = {}
        for _, r in ipairs(got) do by_id[r.message_id] = r end
        for i, row in ipairs(rows) do
            if not same_row(by_id[out[i]], row) then sql.fail(INTERLEAVED) end
        end
        return out
    end)
    if ids then return ids end
    if err == INTERLEAVED then return false end
    return nil, err, errno
end

-- insert_in(q, row) -> message id: one row, inside the transaction of the runner q
-- (lib.sql.tx); a failure raises through sql.fail.
function M.insert_in(q, row)
    local res = sql.must(q.exec(INSERT_ONE, unpack(params({ row }, 1, 1))))
    return res.insert_id
end

-- insert_each(rows) -> array of message ids, dups | nil, err, errno
-- One INSERT per row inside one transaction (one commit for all). A row whose
-- (sender_id, unique_id) is stored already (a resent message) is not stored again: it
-- gets that row's id and its index is a key of dups; the other rows are stored all the same.
function M.insert_each(rows)
    local r, err, errno = sql.tx(function(q)
        local ids, dups = {}, {}
        for i, row in ipairs(rows) do
            local res, ierr, ierrno = q.exec(INSERT_ONE, unpack(params(rows, i, i)))
            if res then
                ids[i] = res.insert_id
            elseif ierrno == sql.ER_DUP_ENTRY and row.unique_id then
                -- a locking read sees the committed first copy whatever this snapshot is
                local first = sql.must(q.query("SELECT message_id FROM chat_message"
                    .. " WHERE sender_id = ? AND unique_id = ? LOCK IN SHARE MODE",
                    row.sender_id, row.unique_id))[1]
                if not first then sql.fail(ierr, ierrno) end
                ids[i], dups[i] = first.message_id, true
            else
                sql.fail(ierr, ierrno)
            end
        end
        return { ids = ids, dups = dups }
    end)
    if not r then return nil, err, errno end
    return r.ids, r.dups
end

-- by_ids(message_ids) -> { [message_id] = {message_id, thread_id, content, created_at,
-- status, msg_type} } | nil, err
function M.by_ids(message_ids)
    local rows, err = host.db.query("SELECT message_id, thread_id, content, created_at, status, msg_type"
        .. " FROM chat_message WHERE message_id IN (" .. ("?, "):rep(#message_ids - 1) .. "?)",
        unpack(message_ids))
    if not rows then return nil, err end
    local found = {}
    for _, r in ipairs(rows) do found[r.message_id] = r end
    return found
end

-- forget_unique_ids(message_ids) -> true | nil, err: those messages no longer answer a
-- resend of their unique_id (they are older than the window that promises it), so a new
-- message may take it. updated_at stays: the content did not change.
function M.forget_unique_ids(message_ids)
    local res, err = host.db.exec("UPDATE chat_message SET unique_id = NULL, updated_at = updated_at"
        .. " WHERE message_id IN (" .. ("?, "):rep(#message_ids - 1) .. "?)", unpack(message_ids))
    if not res then return nil, err end
    return true
end

return M

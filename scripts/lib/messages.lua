-- lib.messages: the chat_message table (sql/001_schema.sql): pages of a thread by
-- message_id, inserts of many rows at once for the chat role's group commit (chat.batch),
-- and of one row in a caller's transaction (lib.friends' greetings). A multi-row INSERT
-- gets consecutive ids only when InnoDB allocates them in one go (innodb_autoinc_lock_mode
-- <= 1) with auto_increment_increment = 1; otherwise rows are inserted one by one in one
-- transaction.
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

-- consecutive_ids() -> true (a multi-row INSERT gets consecutive ids) | false | nil, err
function M.consecutive_ids()
    local rows, err = host.db.query(
        "SELECT @@innodb_autoinc_lock_mode AS mode, @@auto_increment_increment AS step")
    if not rows then return nil, err end
    return tonumber(rows[1].mode) <= 1 and tonumber(rows[1].step) == 1
end

-- insert_multi(rows) -> array of message ids, in row order | nil, err, errno
-- One multi-row INSERT (autocommit): only when consecutive_ids() holds.
function M.insert_multi(rows)
    local values = {}
    for i = 1, #rows do values[i] = ROW end
    local res, err, errno = host.db.exec("INSERT INTO chat_message " .. COLUMNS .. " VALUES "
        .. table.concat(values, ", "), unpack(params(rows, 1, #rows)))
    if not res then return nil, err, errno end
    if res.affected ~= #rows then return nil, "inserted " .. tostring(res.affected) .. " rows" end
    local ids = {}
    for i = 1, #rows do ids[i] = res.insert_id + i - 1 end -- insert_id: the first row's
    return ids
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

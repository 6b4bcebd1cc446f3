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

local COLUMNS = "(thread_id, sender_id, recv_id, content, created_at, updated_at, status, msg_type)"
local ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"

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
        p[n + 5], p[n + 6] = r.created_at, r.created_at
        p[n + 7], p[n + 8] = r.status, r.msg_type or 0
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
    local res = sql.must(q.exec("INSERT INTO chat_message " .. COLUMNS .. " VALUES " .. ROW,
        unpack(params({ row }, 1, 1))))
    return res.insert_id
end

-- insert_each(rows) -> array of message ids | nil, err, errno
-- One INSERT per row inside one transaction (one commit for all).
function M.insert_each(rows)
    return sql.tx(function(q)
        local ids = {}
        for i = 1, #rows do ids[i] = M.insert_in(q, rows[i]) end
        return ids
    end)
end

return M

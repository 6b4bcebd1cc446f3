-- lib.reads: the read cursors of thread_read (sql/005_groups.sql) and the unread counts
-- derived from them: a user's unread messages in a thread are those after the cursor (and,
-- in a group, from the user's joined_message_id on) that others sent.
local host = require "host"

local M = {}

-- advance(uid, thread_id, message_id) -> true (the cursor moved to message_id) | false
-- (it is there or beyond already) | nil, err. The cursor only grows. (The UPDATE's WHERE
-- names the change, so its row count is the same whether MySQL counts found or changed rows.)
local function raise(uid, thread_id, message_id)
    local res, err = host.db.exec("UPDATE thread_read SET last_read_message_id = ?"
        .. " WHERE uid = ? AND thread_id = ? AND last_read_message_id < ?",
        message_id, uid, thread_id, message_id)
    if not res then return nil, err end
    return res.affected > 0
end

function M.advance(uid, thread_id, message_id)
    local moved, err = raise(uid, thread_id, message_id)
    if moved ~= false then return moved, err end
    local res, ierr = host.db.exec("INSERT IGNORE INTO thread_read"
        .. " (uid, thread_id, last_read_message_id) VALUES (?, ?, ?)", uid, thread_id, message_id)
    if not res then return nil, ierr end
    if res.affected > 0 then return true end
    return raise(uid, thread_id, message_id) -- a concurrent first mark inserted the row
end

-- cursor(uid, thread_id) -> last_read_message_id (0 when none) | nil, err
function M.cursor(uid, thread_id)
    local rows, err = host.db.query("SELECT last_read_message_id AS id FROM thread_read"
        .. " WHERE uid = ? AND thread_id = ?", uid, thread_id)
    if not rows then return nil, err end
    return rows[1] and rows[1].id or 0
end

-- cursors(uid, thread_ids) -> { [thread_id] = last_read_message_id } | nil, err
function M.cursors(uid, thread_ids)
    if #thread_ids == 0 then return {} end
    local rows, err = host.db.query("SELECT thread_id, last_read_message_id AS id FROM thread_read"
        .. " WHERE uid = ? AND thread_id IN (" .. ("?, "):rep(#thread_ids - 1) .. "?)",
        uid, unpack(thread_ids))
    if not rows then return nil, err end
    local out = {}
    for _, r in ipairs(rows) do out[r.thread_id] = r.id end
    return out
end

-- unread(uid, after, cap) -> { [thread_id] = count } | nil, err: per thread of after
-- ({ [thread_id] = the last message_id not counted }), the messages after it sent by
-- others, counted up to cap. One statement for the page.
function M.unread(uid, after, cap)
    local parts, params = {}, {}
    for tid, from in pairs(after) do
        parts[#parts + 1] = "(SELECT ? AS thread_id, COUNT(*) AS n FROM (SELECT 1 FROM chat_message"
            .. " WHERE thread_id = ? AND message_id > ? AND sender_id <> ? LIMIT ?) c)"
        local n = #params
        params[n + 1], params[n + 2], params[n + 3], params[n + 4], params[n + 5] =
            tid, tid, from, uid, cap
    end
    if #parts == 0 then return {} end
    local rows, err = host.db.query(table.concat(parts, " UNION ALL "), unpack(params))
    if not rows then return nil, err end
    local out = {}
    for _, r in ipairs(rows) do out[r.thread_id] = r.n end
    return out
end

return M

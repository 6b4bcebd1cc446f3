-- lib.threads: chat_thread and private_chat (sql/001_schema.sql); a user's thread list
-- also names its groups (group_member, sql/005_groups.sql; lib.groups has the rest). One
-- private thread per pair of users, stored as (user1_id < user2_id) under a UNIQUE key: a
-- creator inserts first and, when the key says the pair exists (1062, also after waiting
-- for a concurrent creator to commit), reads the existing thread with a locking read (which sees the newest
-- committed row, not the transaction's snapshot). Never select-then-insert with FOR
-- UPDATE: two creators' gap locks deadlock (error 1213), as the original's CreatePrivateChat did.
local host = require "host"
local sql = require "lib.sql"

local M = {}

local function ordered(a, b)
    if a < b then return a, b end
    return b, a
end

-- find(a, b) -> thread_id | nil (none yet) | nil, err
function M.find(a, b)
    local u1, u2 = ordered(a, b)
    local rows, err = host.db.query(
        "SELECT thread_id FROM private_chat WHERE user1_id = ? AND user2_id = ?", u1, u2)
    if not rows then return nil, err end
    return rows[1] and rows[1].thread_id
end

-- members(thread_id) -> user1_id, user2_id | nil (no such private thread) | nil, err
function M.members(thread_id)
    local rows, err = host.db.query(
        "SELECT user1_id, user2_id FROM private_chat WHERE thread_id = ?", thread_id)
    if not rows then return nil, err end
    if not rows[1] then return nil end
    return rows[1].user1_id, rows[1].user2_id
end

-- create_in(q, a, b) -> thread_id of the pair, created if needed, inside the transaction
-- of the runner q (lib.sql); a failure raises through sql.fail.
function M.create_in(q, a, b)
    local u1, u2 = ordered(a, b)
    local rows = sql.must(q.query(
        "SELECT thread_id FROM private_chat WHERE user1_id = ? AND user2_id = ?", u1, u2))
    if rows[1] then return rows[1].thread_id end
    local thread = sql.must(q.exec("INSERT INTO chat_thread (type) VALUES ('private')"))
    local res, err, errno = q.exec(
        "INSERT INTO private_chat (thread_id, user1_id, user2_id) VALUES (?, ?, ?)",
        thread.insert_id, u1, u2)
    if res then return thread.insert_id end
    if errno ~= sql.ER_DUP_ENTRY then sql.fail(err, errno) end
    -- another creator won: drop our thread row, take theirs
    host.log.info("private thread of ", u1, " and ", u2, " created concurrently: using the other")
    sql.must(q.exec("DELETE FROM chat_thread WHERE id = ?", thread.insert_id))
    rows = sql.must(q.query([[
SELECT thread_id FROM private_chat WHERE user1_id = ? AND user2_id = ? LOCK IN SHARE MODE]],
        u1, u2))
    if not rows[1] then sql.fail("private thread vanished after a duplicate key") end
    return rows[1].thread_id
end

-- get_or_create(a, b) -> thread_id | nil, err
function M.get_or_create(a, b)
    local id, err = M.find(a, b)
    if id or err then return id, err end
    return sql.tx(function(q) return M.create_in(q, a, b) end)
end

-- of_user(uid, cursor, limit) -> rows {thread_id, type ("private"|"group"), user1_id,
-- user2_id (0 for a group), name, role (NULL for a private thread), joined_message_id (0
-- for a private thread)} (the 0s are cast to UNSIGNED: a plain 0 would turn the UNION's
-- columns into DECIMAL, read as strings) of uid's private threads and groups with thread_id > cursor,
-- ascending, at most limit | nil, err
function M.of_user(uid, cursor, limit)
    return host.db.query([[
(SELECT thread_id, 'private' AS type, user1_id, user2_id, NULL AS name, NULL AS role,
  CAST(0 AS UNSIGNED) AS joined_message_id FROM private_chat
  WHERE user1_id = ? AND thread_id > ? ORDER BY thread_id LIMIT ?)
UNION ALL
(SELECT thread_id, 'private', user1_id, user2_id, NULL, NULL, CAST(0 AS UNSIGNED) FROM private_chat
  WHERE user2_id = ? AND thread_id > ? ORDER BY thread_id LIMIT ?)
UNION ALL
(SELECT m.thread_id, 'group', CAST(0 AS UNSIGNED), CAST(0 AS UNSIGNED), g.name, m.role,
  m.joined_message_id
  FROM group_member m JOIN group_chat g ON g.thread_id = m.thread_id
  WHERE m.uid = ? AND m.thread_id > ? ORDER BY m.thread_id LIMIT ?)
ORDER BY thread_id LIMIT ?]], uid, cursor, limit, uid, cursor, limit, uid, cursor, limit, limit)
end

return M

-- lib.friends: the friend and friend_apply tables (sql/001_schema.sql). A friendship is two
-- friend rows, written together and always in the order of self_id, so concurrent
-- acceptances take their row locks in one order. Accepting also creates the pair's
-- private thread (lib.threads) and the greeting messages, in the same transaction.
local host = require "host"
local sql = require "lib.sql"
local threads = require "lib.threads"
local messages = require "lib.messages"

local M = {}

M.GREETING = "We are friends now!"
M.PENDING, M.ACCEPTED = 0, 1 -- friend_apply.status (and "status" in the 1006 apply_list)

-- are_friends(self_id, friend_id) -> true | false | nil, err
function M.are_friends(self_id, friend_id)
    local rows, err = host.db.query(
        "SELECT 1 AS found FROM friend WHERE self_id = ? AND friend_id = ?", self_id, friend_id)
    if not rows then return nil, err end
    return rows[1] ~= nil
end

-- shares_thread(uid, friend_id, thread_id) -> true (friends, and thread_id is their
-- private thread) | false | nil, err
function M.shares_thread(uid, friend_id, thread_id)
    local u1, u2 = math.min(uid, friend_id), math.max(uid, friend_id)
    local rows, err = host.db.query([[
SELECT 1 AS found FROM private_chat p JOIN friend f ON f.self_id = ? AND f.friend_id = ?
WHERE p.thread_id = ? AND p.user1_id = ? AND p.user2_id = ?]], uid, friend_id, thread_id, u1, u2)
    if not rows then return nil, err end
    return rows[1] ~= nil
end

-- apply(from_uid, to_uid, descs, back_name) -> true | nil, err
-- A new application, or the same pair applying again: pending again with the new texts.
function M.apply(from_uid, to_uid, descs, back_name)
    local res, err = host.db.exec([[
INSERT INTO friend_apply (from_uid, to_uid, descs, back_name) VALUES (?, ?, ?, ?)
ON DUPLICATE KEY UPDATE status = ?, descs = VALUES(descs), back_name = VALUES(back_name)]],
        from_uid, to_uid, descs, back_name, M.PENDING)
    if not res then return nil, err end
    return true
end

-- list(uid, limit) -> array of {uid, name, nick, icon, sex, desc, back} | nil, err
-- back is the remark uid gave the friend.
function M.list(uid, limit)
    return host.db.query([[
SELECT u.uid, u.name, u.nick, u.icon, u.sex, u.`desc`, f.back
FROM friend f JOIN user u ON u.uid = f.friend_id
WHERE f.self_id = ? ORDER BY f.id LIMIT ?]], uid, limit)
end

-- applications(uid, limit) -> array of {uid, name, nick, icon, sex, desc, status} | nil, err
-- The newest applications to uid; desc is the applicant's greeting (as in push 1011).
function M.applications(uid, limit)
    return host.db.query([[
SELECT a.from_uid AS uid, u.name, u.nick, u.icon, u.sex, a.descs AS `desc`, a.status
FROM friend_apply a JOIN user u ON u.uid = a.from_uid
WHERE a.to_uid = ? ORDER BY a.id DESC LIMIT ?]], uid, limit)
end

local function insert_message(q, thread_id, sender, receiver, content, now)
    local status = messages.STATUS_READ
    local id = messages.insert_in(q, { thread_id = thread_id, sender_id = sender,
        recv_id = receiver, content = content, created_at = now, status = status })
    return { message_id = id, thread_id = thread_id, sender = sender, receiver = receiver,
        content = content, chat_time = now, status = status }
end

-- Both friend rows in one statement, the smaller self_id first.
local function befriend(q, a, a_back, b, b_back)
    if a > b then a, a_back, b, b_back = b, b_back, a, a_back end
    sql.must(q.exec([[
INSERT INTO friend (self_id, friend_id, back) VALUES (?, ?, ?), (?, ?, ?)
ON DUPLICATE KEY UPDATE back = VALUES(back)]], a, b, a_back, b, a, b_back))
end

local function accept_in(q, acceptor, applicant, back)
    local rows = sql.must(q.query([[
SELECT descs, back_name, status FROM friend_apply WHERE from_uid = ? AND to_uid = ?
FOR UPDATE]], applicant, acceptor))
    local apply = rows[1]
    if not apply or apply.status ~= M.PENDING then return false end
    -- an application the acceptor had sent the other way is settled too
    sql.must(q.exec([[
UPDATE friend_apply SET status = ?
WHERE (from_uid = ? AND to_uid = ?) OR (from_uid = ? AND to_uid = ?)]],
        M.ACCEPTED, applicant, acceptor, acceptor, applicant))
    befriend(q, acceptor, back, applicant, apply.back_name or "")
    local thread_id = threads.create_in(q, acceptor, applicant)
    local now, greetings = sql.now(), {}
    if apply.descs and apply.descs ~= "" then
        greetings[#greetings + 1] =
            insert_message(q, thread_id, applicant, acceptor, apply.descs, now)
    end
    greetings[#greetings + 1] = insert_message(q, thread_id, acceptor, applicant, M.GREETING, now)
    return { thread_id = thread_id, messages = greetings }
end

-- accept(acceptor, applicant, back) -> {thread_id, messages} | false (no pending
-- application from applicant to acceptor) | nil, err, errno
-- One transaction: the application (locked) turns accepted, both friend rows, the pair's
-- private thread (the existing one if any) and the greeting messages (applicant's text,
-- then GREETING from the acceptor), each {message_id, thread_id, sender, receiver,
-- content, chat_time, status}.
function M.accept(acceptor, applicant, back)
    return sql.tx(function(q) return accept_in(q, acceptor, applicant, back) end)
end

return M

-- 1025 threads -> 1026, 1027 private chat -> 1028, 1029 messages -> 1030 and 1085 mark
-- read -> 1086 (push 1087) (docs/protocol.md §6). Threads are private ones and groups;
-- a group's history starts at the member's joined_message_id. Pages are cursor based (ids greater than the cursor, ascending),
-- page_size long, fetched with one row more than a page so load_more is exact; a page that
-- would not fit in one frame is cut shorter (load_more then says so and the cursor points at
-- the last row sent). Only threads the session's user belongs to (1015 otherwise).
local host = require "host"
local errors = require "lib.errors"
local friends = require "lib.friends"
local threads = require "lib.threads"
local messages = require "lib.messages"
local groups = require "lib.groups"
local reads = require "lib.reads"
local push = require "chat.push"
local request = require "chat.request"
local reply = require "chat.reply"
local fit = require "chat.fit"
local wire = require "chat.wire"
local settings = require "chat.settings"
local msgids = require "lib.msgids"

local M = {}

local THREAD_FIELDS = {
    { name = "uid", kind = "uid", self = true },
    { name = "thread_id", kind = "cursor", default = 0 },
}

local CREATE_FIELDS = {
    { name = "uid", kind = "uid", self = true },
    { name = "other_id", kind = "uid", required = true, other = true },
}

local MESSAGE_FIELDS = {
    { name = "thread_id", kind = "id", required = true },
    { name = "message_id", kind = "cursor", default = 0 },
}

local unread -- below

-- 1025 {uid, thread_id: cursor}
function M.list(session, body)
    local f, bad = request.read(session, body, THREAD_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local rows, err = threads.of_user(uid, f.thread_id, settings.page_size + 1)
    if not rows then
        return reply.failed(msgids.LOAD_THREADS, "threads", err, { error = errors.LoadChatFailed, uid = uid })
    end
    local items, ids = {}, {}
    for i, r in ipairs(rows) do
        items[i] = { thread_id = r.thread_id, type = r.type, user1_id = r.user1_id,
            user2_id = r.user2_id, name = r.name ~= host.null and r.name or nil,
            role = r.role ~= host.null and r.role or nil, last_read_message_id = 0, unread = 0 }
        ids[i] = r.thread_id
    end
    local ok, uerr = unread(uid, items, rows, ids)
    if not ok then
        return reply.failed(msgids.LOAD_THREADS, "unread", uerr, { error = errors.LoadChatFailed, uid = uid })
    end
    return fit.paged({ error = errors.Success, uid = uid, next_last_id = f.thread_id }, "threads",
        items, "next_last_id", "thread_id")
end

-- Fills items' last_read_message_id and unread (messages of others after the cursor and,
-- in a group, from joined_message_id; at most chat.unread_count_max). -> true | nil, err
unread = function(uid, items, rows, ids)
    if #ids == 0 then return true end
    local cursors, err = reads.cursors(uid, ids)
    if not cursors then return nil, err end
    local after = {}
    for i, r in ipairs(rows) do
        local cursor = cursors[r.thread_id] or 0
        items[i].last_read_message_id = cursor
        after[r.thread_id] = math.max(cursor, r.joined_message_id - 1)
    end
    local counts, cerr = reads.unread(uid, after, settings.unread_count_max)
    if not counts then return nil, cerr end
    for _, it in ipairs(items) do it.unread = counts[it.thread_id] or 0 end
    return true
end

-- 1027 {uid, other_id}
function M.create(session, body)
    local f, bad = request.read(session, body, CREATE_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local ok, err = friends.are_friends(uid, f.other_id)
    if ok == nil then return reply.failed(msgids.CREATE_PRIVATE_CHAT, "friendship", err) end
    if not ok then return { error = errors.PermissionDenied, field = "other_id" } end
    local thread_id, terr = threads.get_or_create(uid, f.other_id)
    if not thread_id then
        return reply.failed(msgids.CREATE_PRIVATE_CHAT, "private chat", terr,
            { error = errors.CreateChatFailed, uid = uid, other_id = f.other_id })
    end
    return { error = errors.Success, uid = uid, other_id = f.other_id, thread_id = thread_id }
end

-- access(uid, thread_id) -> { peer = the other user (a private thread) | nil, first = the
-- first message_id uid may read } | false (no such thread, or uid is not in it) | nil, err
function M.access(uid, thread_id)
    local u1, u2 = threads.members(thread_id)
    if u1 == nil and u2 ~= nil then return nil, u2 end
    if u1 == uid then return { peer = u2, first = 1 } end
    if u2 == uid then return { peer = u1, first = 1 } end
    if u1 then return false end
    local me, err = groups.member(thread_id, uid)
    if not me then return me, err end
    return { first = me.joined_message_id }
end

-- 1029 {thread_id, message_id: cursor}
function M.messages(session, body)
    local f, bad = request.read(session, body, MESSAGE_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local failed = { error = errors.LoadChatFailed, thread_id = f.thread_id }
    local access, aerr = M.access(uid, f.thread_id)
    if access == nil then return reply.failed(msgids.LOAD_MESSAGES, "thread", aerr, failed) end
    if not access then return { error = errors.PermissionDenied, field = "thread_id" } end
    local from = math.max(f.message_id, access.first - 1)
    local rows, err = messages.page(f.thread_id, from, settings.page_size + 1)
    if not rows then return reply.failed(msgids.LOAD_MESSAGES, "messages", err, failed) end
    local items = {}
    for i, r in ipairs(rows) do items[i] = wire.history(r) end
    return fit.paged({ error = errors.Success, thread_id = f.thread_id,
        last_message_id = f.message_id }, "chat_datas", items, "last_message_id", "msg_id")
end

local READ_FIELDS = {
    { name = "thread_id", kind = "id", required = true },
    { name = "message_id", kind = "id", required = true },
}

-- 1085 {thread_id, message_id} -> 1086 {error, thread_id, last_read_message_id}: the
-- user's read cursor moves up to message_id, a message of the thread the user may read;
-- in a private thread the other user gets push 1087 when it moved.
function M.mark_read(session, body)
    local f, bad = request.read(session, body, READ_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local access, aerr = M.access(uid, f.thread_id)
    if access == nil then return reply.failed(msgids.MARK_READ, "thread", aerr) end
    if not access then return { error = errors.PermissionDenied, field = "thread_id" } end
    local found, ferr = messages.by_ids({ f.message_id })
    if not found then return reply.failed(msgids.MARK_READ, "message", ferr) end
    local m = found[f.message_id]
    if not m or m.thread_id ~= f.thread_id or f.message_id < access.first then
        return { error = errors.InvalidParams, field = "message_id" }
    end
    local moved, err = reads.advance(uid, f.thread_id, f.message_id)
    if moved == nil then return reply.failed(msgids.MARK_READ, "cursor", err) end
    local cursor, cerr = reads.cursor(uid, f.thread_id)
    if not cursor then return reply.failed(msgids.MARK_READ, "cursor", cerr) end
    if moved and access.peer then
        push.post(session, access.peer, msgids.NOTIFY_READ, host.json.encode { error = errors.Success,
            thread_id = f.thread_id, uid = uid, last_read_message_id = f.message_id })
    end
    return { error = errors.Success, thread_id = f.thread_id, last_read_message_id = cursor }
end

return M

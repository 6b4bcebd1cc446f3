-- chat.save: what the messages that store chat messages share (1017 texts, 1035 images):
-- the check that the sender may write to the thread, and storing through the group commit
-- (chat.batch) with resends answered instead of stored twice.
--
-- A resend is not stored twice: an item whose (fromuid, unique_id) names a message of the
-- same kind (text, image) stored in this thread less than chat.dedupe_window_s ago is
-- answered with that message (its message_id, content, chat_time and status).
-- chat_message's unique key (sender_id, unique_id) finds it in the group commit itself.
-- An empty unique_id is never a resend; a unique_id of an older message is released for the
-- new one, and one of another thread's (or another kind's) message stays there (the new
-- message is stored without it).
local friends = require "lib.friends"
local sql = require "lib.sql"
local messages = require "lib.messages"
local batch = require "chat.batch"
local settings = require "chat.settings"

local M = {}

local KNOWN_THREADS_MAX = 64 -- per session: threads already checked (there is no unfriending)

M.UNIQUE_ID_MAX = 128 -- bytes of a unique_id (the original client sends a braced UUID, 38)

-- allowed(session, touid, thread_id) -> true | false | nil, err: friends with touid, and
-- thread_id is their thread. Remembered per session once true.
function M.allowed(session, touid, thread_id)
    local known = session.data.threads
    if known and known[thread_id] == touid then return true end
    local ok, err = friends.shares_thread(session.uid, touid, thread_id)
    if not ok then return ok, err end
    if not known or session.data.threads_n >= KNOWN_THREADS_MAX then
        known = {}
        session.data.threads, session.data.threads_n = known, 0
    end
    known[thread_id] = touid
    session.data.threads_n = session.data.threads_n + 1
    return true
end

local function rows_of(uid, touid, thread_id, items, now)
    local rows = {}
    for i, it in ipairs(items) do
        rows[i] = { thread_id = thread_id, sender_id = uid, recv_id = touid, content = it.content,
            unique_id = it.key, created_at = now, status = it.status,
            msg_type = it.msg_type }
    end
    return rows
end

-- Items whose (uid, unique_id) was stored already (batch.store's resent) are resends of
-- that message when it is of their kind, in this thread and within chat.dedupe_window_s:
-- they take its content, time and status. Otherwise they are new: an older message
-- releases its unique_id, one of another thread or kind keeps it (this item is stored
-- without). -> the items to store again | nil, err
local function resends(thread_id, items)
    local ids = {}
    for i, it in ipairs(items) do ids[i] = it.message_id end
    local firsts, err = messages.by_ids(ids)
    if not firsts then return nil, err end
    local since = os.date("%Y-%m-%d %H:%M:%S", os.time() - settings.dedupe_window_s)
    local new, expired = {}, {}
    for _, it in ipairs(items) do
        local first = firsts[it.message_id]
        local same = first and first.thread_id == thread_id and first.msg_type == it.msg_type
        if same and first.created_at >= since then
            it.content, it.chat_time, it.status = first.content, first.created_at, first.status
        else
            if same then
                expired[#expired + 1] = first.message_id
            elseif first then
                it.key = nil
            end
            new[#new + 1] = it
        end
    end
    if #expired > 0 then
        local ok, ferr = messages.forget_unique_ids(expired)
        if not ok then return nil, ferr end
    end
    return new
end

-- store(uid, touid, thread_id, items) -> the items with message_id and chat_time (and the
-- first copy's content and status for a resend) | nil, err. items: array of {content,
-- unique_id ("" for none), msg_type, status}. Optimistic: a resend is found by the unique
-- key, so a message that is none costs no look-up. Items stored anew after resends() are
-- taken as they come back.
function M.store(uid, touid, thread_id, items)
    for _, it in ipairs(items) do
        if it.unique_id ~= "" then it.key = it.unique_id end -- no unique_id: NULL, never resent
    end
    local todo = items
    for round = 1, 2 do
        local now = sql.now()
        local ids, resent = batch.store(rows_of(uid, touid, thread_id, todo, now))
        if not ids then return nil, resent end
        local again = {}
        for i, it in ipairs(todo) do
            it.message_id, it.chat_time = ids[i], now
            if resent[i] then again[#again + 1] = it end
        end
        if #again == 0 or round == 2 then break end
        local err
        todo, err = resends(thread_id, again)
        if not todo then return nil, err end
        if #todo == 0 then break end
    end
    return items
end

return M

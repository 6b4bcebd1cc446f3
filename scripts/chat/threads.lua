-- 1025 threads -> 1026, 1027 private chat -> 1028 and 1029 messages -> 1030
-- (docs/protocol.md §6). Pages are cursor based (ids greater than the cursor, ascending),
-- page_size long, fetched with one row more than a page so load_more is exact; a page that
-- would not fit in one frame is cut shorter (load_more then says so and the cursor points at
-- the last row sent). Only threads the session's user belongs to (1015 otherwise).
local errors = require "lib.errors"
local friends = require "lib.friends"
local threads = require "lib.threads"
local messages = require "lib.messages"
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

-- page(items, rsp) -> items kept, more: the items of one page (page_size of the
-- page_size + 1 fetched) that fit into rsp's frame (rsp has the list still empty).
local function page(items, rsp)
    local n = math.min(#items, settings.page_size)
    local fits = fit.count(items, fit.budget(rsp))
    if fits < n then n = fits end
    return fit.head(items, n), n < #items
end

-- 1025 {uid, thread_id: cursor}
function M.list(session, body)
    local f, bad = request.read(session, body, THREAD_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local rows, err = threads.of_user(uid, f.thread_id, settings.page_size + 1)
    if not rows then
        return reply.failed(msgids.LOAD_THREADS, "threads", err, { error = errors.LoadChatFailed, uid = uid })
    end
    local items = {}
    for i, r in ipairs(rows) do
        items[i] = { thread_id = r.thread_id, type = "private", user1_id = r.user1_id,
            user2_id = r.user2_id }
    end
    local rsp = { error = errors.Success, uid = uid, threads = fit.head({}, 0), load_more = false,
        next_last_id = f.thread_id }
    rsp.threads, rsp.load_more = page(items, rsp)
    local last = rsp.threads[#rsp.threads]
    if last then rsp.next_last_id = last.thread_id end
    return rsp
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

-- 1029 {thread_id, message_id: cursor}
function M.messages(session, body)
    local f, bad = request.read(session, body, MESSAGE_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local failed = { error = errors.LoadChatFailed, thread_id = f.thread_id }
    local u1, u2 = threads.members(f.thread_id)
    if u1 == nil and u2 ~= nil then return reply.failed(msgids.LOAD_MESSAGES, "thread", u2, failed) end
    if u1 ~= uid and u2 ~= uid then
        return { error = errors.PermissionDenied, field = "thread_id" }
    end
    local rows, err = messages.page(f.thread_id, f.message_id, settings.page_size + 1)
    if not rows then return reply.failed(msgids.LOAD_MESSAGES, "messages", err, failed) end
    local items = {}
    for i, r in ipairs(rows) do items[i] = wire.history(r) end
    local rsp = { error = errors.Success, thread_id = f.thread_id, chat_datas = fit.head({}, 0),
        load_more = false, last_message_id = f.message_id }
    rsp.chat_datas, rsp.load_more = page(items, rsp)
    local last = rsp.chat_datas[#rsp.chat_datas]
    if last then rsp.last_message_id = last.msg_id end
    return rsp
end

return M

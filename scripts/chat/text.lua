-- 1017 text -> 1018 (+ push 1019 to the peer), docs/protocol.md §6. Only between
-- friends, in their own private thread (1015 otherwise); at most text_max_items items of at
-- most text_max_bytes bytes each (1016 naming the field). Every message is stored (group
-- commit, chat.batch) before the 1018 that reports its message_id next to the client's
-- unique_id; the peer then gets the same body as 1019 wherever it is connected.
--
-- A resend is not stored twice: an item whose (fromuid, unique_id) names a message stored
-- in this thread less than chat.dedupe_window_s ago is answered with that message (its
-- message_id, content and chat_time) and pushed again (the outcome of the first send was
-- unknown to the client, so its peer may not have had it; a receiver keeps one message
-- per message_id). chat_message's unique key (sender_id, unique_id) finds it in the group
-- commit itself. Two items with one unique_id are refused (1016 unique_id); an empty
-- unique_id is never a resend; a unique_id of an older message is released for the new
-- one, and one of another thread's message stays there (the new message is stored
-- without it).
local host = require "host"
local errors = require "lib.errors"
local validate = require "lib.validate"
local friends = require "lib.friends"
local sql = require "lib.sql"
local messages = require "lib.messages"
local request = require "chat.request"
local reply = require "chat.reply"
local batch = require "chat.batch"
local push = require "chat.push"
local wire = require "chat.wire"
local fit = require "chat.fit"
local settings = require "chat.settings"
local msgids = require "lib.msgids"

local MSG = msgids.TEXT_CHAT
local UNIQUE_ID_MAX = 128 -- the client sends a braced UUID (38 bytes)
local KNOWN_THREADS_MAX = 64 -- per session: threads already checked (there is no unfriending)

local FIELDS = {
    { name = "fromuid", kind = "uid", self = true },
    { name = "touid", kind = "uid", required = true, other = true },
    { name = "thread_id", kind = "id", required = true },
    { name = "text_array", kind = "array", required = true },
}

local function invalid(field) return { error = errors.InvalidParams, field = field } end
local function wrong_type(field) return { error = errors.Error_Json, field = field } end

-- The items: -> array of {content, unique_id} | nil, reply
local function read_items(list)
    if #list == 0 or #list > settings.text_max_items then return nil, invalid("text_array") end
    local items, seen = {}, {}
    for i, it in ipairs(list) do
        if type(it) ~= "table" then return nil, wrong_type("text_array") end
        local content, unique_id = it.content, it.unique_id
        if unique_id == nil or unique_id == host.null then unique_id = "" end
        if type(content) ~= "string" then
            if content == nil or content == host.null then return nil, invalid("content") end
            return nil, wrong_type("content")
        end
        if type(unique_id) ~= "string" then return nil, wrong_type("unique_id") end
        if content == "" or not validate.utf8(content, settings.text_max_bytes) then
            return nil, invalid("content")
        end
        if #unique_id > UNIQUE_ID_MAX then return nil, invalid("unique_id") end
        if unique_id ~= "" then
            if seen[unique_id] then return nil, invalid("unique_id") end
            seen[unique_id] = true
        end
        items[i] = { content = content, unique_id = unique_id }
    end
    return items
end

-- Friends with touid, and thread_id is their thread: -> true | false | nil, err.
-- Remembered per session once true.
local function allowed(session, touid, thread_id)
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
            unique_id = it.key, created_at = now, status = messages.STATUS_READ, msg_type = 0 }
    end
    return rows
end

-- Items whose (uid, unique_id) was stored already (batch.store's resent) are resends of
-- that message when it is in this thread and within chat.dedupe_window_s: they take its
-- content and time. Otherwise they are new: an older message releases its unique_id, one
-- of another thread keeps it (this item is stored without). -> the items to store again
-- | nil, err
local function resends(thread_id, items)
    local ids = {}
    for i, it in ipairs(items) do ids[i] = it.message_id end
    local firsts, err = messages.by_ids(ids)
    if not firsts then return nil, err end
    local since = os.date("%Y-%m-%d %H:%M:%S", os.time() - settings.dedupe_window_s)
    local new, expired = {}, {}
    for _, it in ipairs(items) do
        local first = firsts[it.message_id]
        if first and first.thread_id == thread_id and first.created_at >= since then
            it.content, it.chat_time = first.content, first.created_at
        else
            if first and first.thread_id == thread_id then
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

-- Stores the items (group commit): -> the items with message_id and chat_time | nil, err
-- Optimistic: a resend is found by the unique key, so a message that is none costs no
-- look-up. Items stored anew after resends() are taken as they come back.
local function store(uid, touid, thread_id, items)
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

-- The 1018/1019 bodies of the stored items, each encoded once (the ack and the peer's push
-- are the same bytes) and within one frame: one body, or several when the items are too
-- big together (possible only with a max_body_bytes far above the default).
-- -> array of { json = the encoded body, items = the stored items it carries }
local function bodies(uid, touid, thread_id, stored)
    local function encoded(items)
        return { json = host.json.encode(wire.text(uid, touid, thread_id, items)), items = items }
    end
    local whole = encoded(stored)
    if #whole.json <= fit.MAX then return { whole } end
    local out, rest = {}, stored
    local room = fit.budget(wire.text(uid, touid, thread_id, {}))
    while #rest > 0 do
        local n = fit.count(wire.text(uid, touid, thread_id, rest).chat_datas, room)
        n = math.max(1, n) -- apart: count's second value (bytes) must not reach math.max
        out[#out + 1] = encoded({ unpack(rest, 1, n) })
        rest = { unpack(rest, n + 1) }
    end
    return out
end

local function handle(session, body)
    local f, bad = request.read(session, body, FIELDS)
    if not f then return bad end
    local uid = session.uid
    local items, ibad = read_items(f.text_array)
    if not items then return ibad end
    local ok, aerr = allowed(session, f.touid, f.thread_id)
    if ok == nil then return reply.failed(MSG, "thread check", aerr) end
    if not ok then return { error = errors.PermissionDenied, field = "thread_id" } end
    local stored, serr = store(uid, f.touid, f.thread_id, items)
    if not stored then
        return reply.failed(MSG, "store", serr,
            { fromuid = uid, touid = f.touid, thread_id = f.thread_id })
    end
    local parts = bodies(uid, f.touid, f.thread_id, stored)
    for _, part in ipairs(parts) do -- the acks first: a push may take a peer's round trip
        session:send(MSG + 1, part.json)
    end
    for _, part in ipairs(parts) do -- the peer's 1019 is the same body
        push.post(session, f.touid, msgids.NOTIFY_TEXT_CHAT, part.json, "ChatService.NotifyTextChatMsg",
            wire.text_pb(uid, f.touid, f.thread_id, part.items))
    end
    return nil
end

-- The module is the 1017 handler (called as text(session, body)) and lends group messages
-- (chat.groups, 1065) its steps: read_items(list), store(uid, recv_id, thread_id, items)
-- and bodies(uid, touid, thread_id, stored).
return setmetatable({ read_items = read_items, store = store, bodies = bodies },
    { __call = function(_, session, body) return handle(session, body) end })

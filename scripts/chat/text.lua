-- 1017 text -> 1018 (+ push 1019 to the peer), docs/protocol.md §6. Only between
-- friends, in their own private thread (1015 otherwise); at most text_max_items items of at
-- most text_max_bytes bytes each (1016 naming the field). Every message is stored (group
-- commit, chat.batch) before the 1018 that reports its message_id next to the client's
-- unique_id; the peer then gets the same body as 1019 wherever it is connected.
--
-- A resend is not stored twice (chat.save): it is answered with the message stored first
-- and pushed again (the outcome of the first send was unknown to the client, so its peer
-- may not have had it; a receiver keeps one message per message_id). Two items with one
-- unique_id are refused (1016 unique_id).
-- M.handle is the 1017 handler; read_items and bodies are shared with group texts (chat.groups).
local host = require "host"
local errors = require "lib.errors"
local validate = require "lib.validate"
local messages = require "lib.messages"
local request = require "chat.request"
local reply = require "chat.reply"
local save = require "chat.save"
local push = require "chat.push"
local wire = require "chat.wire"
local fit = require "chat.fit"
local settings = require "chat.settings"
local msgids = require "lib.msgids"

local MSG = msgids.TEXT_CHAT

local M = {}

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
        if #unique_id > save.UNIQUE_ID_MAX then return nil, invalid("unique_id") end
        if unique_id ~= "" then
            if seen[unique_id] then return nil, invalid("unique_id") end
            seen[unique_id] = true
        end
        items[i] = { content = content, unique_id = unique_id, msg_type = 0,
            status = messages.STATUS_READ }
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
    local ok, aerr = save.allowed(session, f.touid, f.thread_id)
    if ok == nil then return reply.failed(MSG, "thread check", aerr) end
    if not ok then return { error = errors.PermissionDenied, field = "thread_id" } end
    local stored, serr = save.store(uid, f.touid, f.thread_id, items)
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
M.read_items, M.bodies, M.handle = read_items, bodies, handle

return M

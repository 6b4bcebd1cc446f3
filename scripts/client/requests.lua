-- client.requests: what a logged-in client asks the chat server (docs/protocol.md §6):
-- search (1007), friend requests (1009) and acceptances (1013), the private thread with a
-- friend (1027), messages (1017, answered once stored) and history (1029, paged), plus the
-- lists kept from the login reply and the pushes. Methods of client.api's Client, which
-- sends them through its chat_request (waiting out a reconnection, retrying a busy server).
local host = require "host"
local validate = require "lib.validate"
local checks = require "client.checks"
local sentences = require "client.sentences"
local msgids = require "lib.msgids"

local M = {}
local Client = {}
M.methods = Client

local function invalid(msg) return nil, msg, "invalid" end

local function as_uid(v)
    local n = tonumber(v)
    if not validate.uid(n) then return nil end
    return n
end

function Client:my_uid() return self.me and self.me.uid end

-- search(text) -> {uid, name, nick, desc, sex, icon} | nil, sentence, code
function Client:search(text)
    if type(text) ~= "string" or checks.trim(text) == "" then
        return invalid(checks.SEARCH_EMPTY)
    end
    local reply, err, code = self:chat_request(msgids.SEARCH_USER, { uid = checks.trim(text) }, true)
    if not reply then return nil, err, code end
    if type(reply.uid) ~= "number" then return nil, sentences.BAD_REPLY, "reply" end
    self.names[reply.uid] = reply.name
    return { uid = reply.uid, name = reply.name, nick = reply.nick, desc = reply.desc,
        sex = reply.sex, icon = reply.icon }
end

-- The uid of another user, checked: -> uid | nil, sentence, "invalid"
function Client:other(v)
    local uid = as_uid(v)
    if not uid then return invalid(("%s is not a user id"):format(tostring(v))) end
    if uid == self:my_uid() then return invalid("That is your own user id") end
    return uid
end

-- add(uid, greeting?, remark?) -> true | nil, sentence, code (a friend request)
function Client:add(v, greeting, remark)
    local uid, msg, code = self:other(v)
    if not uid then return nil, msg, code end
    if not self.me then return self:offline() end
    if greeting == nil or greeting == "" then
        greeting = ("Hello, I am %s"):format(self.me.name)
    end
    local reply, err, ecode = self:chat_request(msgids.ADD_FRIEND, { uid = self.me.uid, applyname = greeting,
        bakname = remark or self.names[uid] or "", touid = uid }, true)
    if not reply then return nil, err, ecode end
    return true
end

-- The greeting messages an acceptance carries, as history items.
function Client:greetings(datas)
    local out = {}
    for _, d in ipairs(type(datas) == "table" and datas or {}) do
        out[#out + 1] = { message_id = d.msg_id, from = d.sender, text = d.msg_content,
            time = d.chat_time, thread_id = d.thread_id, name = self.names[d.sender] }
    end
    return out
end

local function thread_of(reply)
    if type(reply.thread_id) == "number" then return reply.thread_id end
    local first = type(reply.chat_datas) == "table" and reply.chat_datas[1]
    return first and first.thread_id or nil
end

-- accept(uid, remark?) -> {uid, name, nick, thread_id, messages} | nil, sentence, code
function Client:accept(v, remark)
    local uid, msg, code = self:other(v)
    if not uid then return nil, msg, code end
    if not self.me then return self:offline() end
    local pending = self.request_by_uid[uid]
    local reply, err, ecode = self:chat_request(msgids.AUTH_FRIEND, { fromuid = self.me.uid, touid = uid,
        back = remark or (pending and pending.name) or "" }, false)
    if not reply then return nil, err, ecode end
    self:add_friend { uid = uid, name = reply.name, nick = reply.nick, icon = reply.icon,
        sex = reply.sex, back = remark }
    self.threads[uid] = thread_of(reply) or self.threads[uid]
    return { uid = uid, name = reply.name, nick = reply.nick, thread_id = self.threads[uid],
        messages = self:greetings(reply.chat_datas) }
end

-- The private thread with a friend, created (1027) when not known yet.
function Client:thread_with(uid)
    if self.threads[uid] then return self.threads[uid] end
    if not self.me then return self:offline() end
    local reply, err, code = self:chat_request(msgids.CREATE_PRIVATE_CHAT, { uid = self.me.uid, other_id = uid }, true)
    if not reply then return nil, err, code end
    if type(reply.thread_id) ~= "number" then return nil, sentences.BAD_REPLY, "reply" end
    self.threads[uid] = reply.thread_id
    return reply.thread_id
end

-- A braced UUID (version 4), as the original client's QUuid::toString().
local function unique_id()
    local h = host.crypto.random_hex(16)
    local variant = ("89ab"):sub(1 + host.crypto.random_uniform(4)):sub(1, 1)
    return ("{%s-%s-4%s-%s%s-%s}"):format(h:sub(1, 8), h:sub(9, 12), h:sub(14, 16), variant,
        h:sub(18, 20), h:sub(21, 32))
end
M.unique_id = unique_id

-- send(uid, text) -> {to, message_id, thread_id, unique_id, text, time} once the server
-- stored it (the 1018 ack) | nil, sentence, code
function Client:send(v, text)
    local uid, msg, code = self:other(v)
    if not uid then return nil, msg, code end
    if type(text) ~= "string" or not text:find("%S") then return invalid(checks.TEXT_EMPTY) end
    if #text > self.cfg.text_max_bytes then
        return invalid(("Message is %d bytes, the limit is %d"):format(#text,
            self.cfg.text_max_bytes))
    end
    if not validate.utf8(text, self.cfg.text_max_bytes) then
        return invalid("Message must be valid UTF-8")
    end
    if not self.me then return self:offline() end
    local thread_id, terr, tcode = self:thread_with(uid)
    if not thread_id then return nil, terr, tcode end
    local id = unique_id()
    local ack, err, ecode = self:chat_request(msgids.TEXT_CHAT, { fromuid = self.me.uid, touid = uid,
        thread_id = thread_id, text_array = { { content = text, unique_id = id } } }, false)
    if not ack then return nil, err, ecode end
    local item = type(ack.chat_datas) == "table" and ack.chat_datas[1]
    if type(item) ~= "table" then return nil, sentences.BAD_REPLY, "reply" end
    return { to = uid, name = self.names[uid], message_id = item.message_id,
        thread_id = ack.thread_id or thread_id, unique_id = item.unique_id, text = item.content,
        time = item.chat_time }
end

-- history(uid, n?) -> the last n messages with a friend, oldest first:
-- {message_id, from, to, name, text, time, mine} | nil, sentence, code
function Client:history(v, n)
    local uid, msg, code = self:other(v)
    if not uid then return nil, msg, code end
    local thread_id, terr, tcode = self:thread_with(uid)
    if not thread_id then return nil, terr, tcode end
    return self:thread_history(thread_id, n)
end

-- thread_history(thread_id, n?) -> the last n messages of a thread (private or group),
-- oldest first, as history gives them (an image: image = true, text its name, size when
-- known, uploading = true while its file is incomplete) | nil, sentence, code
function Client:thread_history(thread_id, n)
    n = tonumber(n) or self.cfg.history_default
    if n < 1 then return invalid("The number of messages must be at least 1") end
    local kept, cursor = {}, 0
    repeat
        local page, err, ecode = self:chat_request(msgids.LOAD_MESSAGES, { thread_id = thread_id,
            message_id = cursor }, true)
        if not page then return nil, err, ecode end
        local datas = type(page.chat_datas) == "table" and page.chat_datas or {}
        for _, d in ipairs(datas) do
            kept[#kept + 1] = d
            if #kept > n then table.remove(kept, 1) end
        end
        local last = datas[#datas]
        if not last or not page.load_more then break end
        cursor = page.last_message_id or last.msg_id
    until false
    local out = {}
    for i, d in ipairs(kept) do
        out[i] = { message_id = d.msg_id, from = d.sender, to = d.receiver,
            name = self.names[d.sender], text = d.msg_content, time = d.chat_time,
            mine = d.sender == self.me.uid }
        if d.msg_type == 1 then -- an image: its name in msg_content; status 3 uploading
            out[i].image, out[i].uploading = true, d.status == 3
            local known = self.images[d.msg_id] -- its size, when a 1039 or /save told it
            out[i].size = known and known.total_size
            if d.status ~= 3 and not known then
                self:remember_image { message_id = d.msg_id, name = d.msg_content,
                    sender_id = d.sender, receiver_id = d.receiver }
            end
        end
    end
    return out
end

-- known_threads() -> {[other uid] = thread_id}: the private threads the user is in (1025,
-- paged), which the client remembers, without creating any | nil, sentence, code. Every
-- thread's 1026 item (groups too) is kept in self.unread[thread_id] for its unread count.
function Client:known_threads()
    if not self.me then return self:offline() end
    local cursor = 0
    repeat
        local page, err, code = self:chat_request(msgids.LOAD_THREADS, { uid = self.me.uid, thread_id = cursor },
            true)
        if not page then return nil, err, code end
        local list = type(page.threads) == "table" and page.threads or {}
        for _, t in ipairs(list) do
            local other = t.user1_id == self.me.uid and t.user2_id or t.user1_id
            if t.type == "private" and type(t.thread_id) == "number" and type(other) == "number" then
                self.threads[other] = t.thread_id
            end
            if type(t.unread) == "number" then self.unread[t.thread_id] = t end
        end
        local next_cursor = tonumber(page.next_last_id)
        if #list == 0 or not page.load_more or not next_cursor or next_cursor <= cursor then
            break
        end
        cursor = next_cursor
    until false
    return self.threads
end

local function sorted(by_uid)
    local list = {}
    for _, v in pairs(by_uid) do list[#list + 1] = v end
    table.sort(list, function(a, b) return a.uid < b.uid end)
    return list
end

-- friends() -> {uid, name, nick, desc, back}..., by uid
function Client:friends() return sorted(self.friend_by_uid) end

-- requests() -> {uid, name, nick, greeting}... (applications waiting for an answer), by uid
function Client:requests() return sorted(self.request_by_uid) end

function Client:is_friend(uid) return self.friend_by_uid[tonumber(uid)] ~= nil end

function Client:name_of(uid) return self.names[uid] end

return M

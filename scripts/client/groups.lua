-- client.groups: the group requests of a logged-in client (docs/protocol.md §6.6) and read
-- marks: create (1061), the user's groups (1083), invite (1063), leave (1071), members
-- (1081, all pages), group messages (1065, answered once stored), mark read (1085) and the
-- unread summary of the 1025 thread list. Methods of client.api's Client, next to
-- client.requests' (self.groups: thread_id -> {thread_id, name, role}, as last seen).
local host = require "host"
local validate = require "lib.validate"
local checks = require "client.checks"
local sentences = require "client.sentences"
local msgids = require "lib.msgids"
local requests = require "client.requests"

local M = {}
local Client = {}
M.methods = Client

local function invalid(msg) return nil, msg, "invalid" end

local function as_id(v)
    local n = tonumber(v)
    if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then return nil end
    return n
end

-- A group id typed by the user, or the name of a group the client knows: -> thread_id | nil
function Client:group_of(word)
    local id = as_id(word)
    if id then return id end
    for tid, g in pairs(self.groups) do
        if g.name == word then return tid end
    end
    return nil
end

-- uids(list) -> array of uids | nil, sentence, "invalid"
local function uids(list)
    local out = {}
    for i, v in ipairs(list) do
        local n = tonumber(v)
        if not validate.uid(n) then return invalid(("%s is not a user id"):format(tostring(v))) end
        out[i] = n
    end
    return out
end

-- create_group(name, uid_list) -> {thread_id, name, members} | nil, sentence, code
function Client:create_group(name, list)
    if type(name) ~= "string" or not name:find("%S") then return invalid("A group needs a name") end
    local members, msg, code = uids(list or {})
    if not members then return nil, msg, code end
    if not self.me then return self:offline() end
    local reply, err, ecode = self:chat_request(msgids.CREATE_GROUP,
        { name = checks.trim(name), members = members }, false)
    if not reply then return nil, err, ecode end
    self.groups[reply.thread_id] = { thread_id = reply.thread_id, name = reply.name, role = "owner" }
    return { thread_id = reply.thread_id, name = reply.name, members = reply.members }
end

-- Every page of a paged list: body with its cursor field `key` = the last item's `key`,
-- the items in the reply's `list`. -> all items | nil, sentence, code
local function every(self, msg_id, body, list, key)
    local out, cursor = {}, 0
    repeat
        body[key] = cursor
        local page, err, code = self:chat_request(msg_id, body, true)
        if not page then return nil, err, code end
        local items = type(page[list]) == "table" and page[list] or {}
        for _, it in ipairs(items) do out[#out + 1] = it end
        local last = items[#items]
        if not last or not page.load_more then break end
        cursor = last[key]
    until false
    return out
end

-- my_groups() -> {thread_id, name, role, member_count, owner_uid}... | nil, sentence, code
function Client:my_groups()
    if not self.me then return self:offline() end
    local out, err, code = every(self, msgids.MY_GROUPS, {}, "groups", "thread_id")
    if not out then return nil, err, code end
    for _, g in ipairs(out) do
        self.groups[g.thread_id] = { thread_id = g.thread_id, name = g.name, role = g.role }
    end
    return out
end

-- invite(thread_id, uid_list) -> the uids added | nil, sentence, code
function Client:invite(thread_id, list)
    local members, msg, code = uids(list)
    if not members then return nil, msg, code end
    if #members == 0 then return invalid("Name at least one user id to invite") end
    local reply, err, ecode = self:chat_request(msgids.INVITE_GROUP,
        { thread_id = thread_id, members = members }, true)
    if not reply then return nil, err, ecode end
    return reply.added
end

-- leave(thread_id) -> true | nil, sentence, code
function Client:leave(thread_id)
    local reply, err, code = self:chat_request(msgids.LEAVE_GROUP, { thread_id = thread_id }, false)
    if not reply then return nil, err, code end
    self.groups[thread_id] = nil
    return true
end

-- members(thread_id) -> {uid, role, name, nick}... (every page) | nil, sentence, code
function Client:members(thread_id)
    local out, err, code = every(self, msgids.GROUP_MEMBERS, { thread_id = thread_id }, "members",
        "uid")
    if not out then return nil, err, code end
    for _, m in ipairs(out) do self.names[m.uid] = self.names[m.uid] or m.name end
    return out
end

-- send_group(thread_id, text) -> {thread_id, message_id, unique_id, text, time} once
-- stored (1066) | nil, sentence, code
function Client:send_group(thread_id, text)
    if type(text) ~= "string" or not text:find("%S") then return invalid(checks.TEXT_EMPTY) end
    if not validate.utf8(text, self.cfg.text_max_bytes) then
        return invalid(("Message must be valid UTF-8 of at most %d bytes"):format(
            self.cfg.text_max_bytes))
    end
    if not self.me then return self:offline() end
    local ack, err, code = self:chat_request(msgids.GROUP_TEXT, { thread_id = thread_id,
        text_array = { { content = text, unique_id = requests.unique_id() } } }, true)
    if not ack then return nil, err, code end
    local item = type(ack.chat_datas) == "table" and ack.chat_datas[1]
    if type(item) ~= "table" then return nil, sentences.BAD_REPLY, "reply" end
    return { thread_id = thread_id, message_id = item.message_id, unique_id = item.unique_id,
        text = item.content, time = item.chat_time }
end

-- mark_read(thread_id, message_id) -> the read cursor now | nil, sentence, code
function Client:mark_read(thread_id, message_id)
    local reply, err, code = self:chat_request(msgids.MARK_READ,
        { thread_id = thread_id, message_id = message_id }, true)
    if not reply then return nil, err, code end
    local t = self.unread[thread_id]
    if t then t.unread = 0 end
    return reply.last_read_message_id
end

-- mark_shown(thread_id, message_id): what the user was shown is read; the mark (1085) is
-- sent by a task of its own, off the caller's path. A failed mark only leaves the message
-- counted as unread at the next login.
function Client:mark_shown(thread_id, message_id)
    if type(thread_id) ~= "number" or type(message_id) ~= "number" then return end
    host.spawn(function() self:mark_read(thread_id, message_id) end)
end

-- unread_threads() -> the 1026 items with unread > 0 ({thread_id, type, name?, user1_id,
-- user2_id, unread}), by thread_id | nil, sentence, code
function Client:unread_threads()
    local known, err, code = self:known_threads()
    if not known then return nil, err, code end
    local out = {}
    for _, t in pairs(self.unread) do
        if t.unread > 0 then out[#out + 1] = t end
        if t.type == "group" then
            self.groups[t.thread_id] = { thread_id = t.thread_id, name = t.name, role = t.role }
        end
    end
    table.sort(out, function(a, b) return a.thread_id < b.thread_id end)
    return out
end

return M

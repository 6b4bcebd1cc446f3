-- client.pushes: what the chat server sends unasked (docs/protocol.md §6), turned into
-- the client's events, with the client's lists brought up to date on the way: 1011 a
-- friend request arrived, 1015 a request of ours was accepted, 1019 messages from a
-- friend, 1039 an image's file arrived, 1067 messages in a group, 1069 a change of a
-- group, 1087 a friend read our messages. (1021, the kick, ends the session: client.api
-- handles it.)
local msgids = require "lib.msgids"

local M = {}

local function num(v) return type(v) == "number" and v or nil end

-- 1011 {applyuid, name, desc, icon, nick, sex}
local function apply(c, body)
    local uid = num(body.applyuid)
    if not uid then return {} end
    c:add_request { uid = uid, name = body.name, nick = body.nick, greeting = body.desc }
    return { { kind = "apply", uid = uid, name = body.name, nick = body.nick,
        greeting = body.desc } }
end

-- 1015 {fromuid (the friend who accepted), touid, name, nick, icon, sex, chat_datas}
local function accepted(c, body)
    local uid = num(body.fromuid)
    if not uid then return {} end
    c:add_friend { uid = uid, name = body.name, nick = body.nick, icon = body.icon,
        sex = body.sex }
    local datas = type(body.chat_datas) == "table" and body.chat_datas or {}
    local first = datas[1]
    c.threads[uid] = num(body.thread_id) or (first and num(first.thread_id)) or c.threads[uid]
    return { { kind = "accepted", uid = uid, name = body.name, nick = body.nick,
        thread_id = c.threads[uid], messages = c:greetings(datas) } }
end

-- 1019 {fromuid, touid, thread_id, chat_datas:[{message_id, unique_id, content, chat_time}]}
local function text(c, body)
    local from = num(body.fromuid)
    if not from then return {} end
    if num(body.thread_id) and num(body.touid) ~= 0 then c.threads[from] = body.thread_id end
    local out = {}
    for _, d in ipairs(type(body.chat_datas) == "table" and body.chat_datas or {}) do
        out[#out + 1] = { kind = "message", from = from, to = body.touid,
            name = c.names[from] or ("user " .. from), text = d.content,
            message_id = d.message_id, thread_id = body.thread_id, unique_id = d.unique_id,
            time = d.chat_time }
    end
    return out
end

-- 1067 {fromuid, touid: 0, thread_id, chat_datas}: as 1019, in a group
local function group_text(c, body)
    local out = text(c, body)
    local g = c.groups[body.thread_id]
    for _, ev in ipairs(out) do
        ev.kind, ev.group = "group_message", g and g.name or ("group " .. tostring(body.thread_id))
    end
    return out
end

-- 1069 {kind, thread_id, by, name?, uids?, role?, owner_uid?, invite_policy?}
local function group_event(c, body)
    local tid = num(body.thread_id)
    if not tid then return {} end
    local g = c.groups[tid] or { thread_id = tid }
    if type(body.name) == "string" then g.name = body.name end
    c.groups[tid] = g
    local mine = false
    for _, u in ipairs(type(body.uids) == "table" and body.uids or {}) do
        if u == c:my_uid() then mine = true end
    end
    if mine and (body.kind == "removed") then c.groups[tid] = nil end
    return { { kind = "group_event", change = body.kind, thread_id = tid, group = g.name,
        by = body.by, by_name = c.names[body.by], uids = body.uids, role = body.role,
        owner_uid = body.owner_uid, invite_policy = body.invite_policy, me = mine } }
end

-- 1087 {thread_id, uid (the reader), last_read_message_id}
local function read(c, body)
    local uid = num(body.uid)
    if not uid then return {} end
    return { { kind = "read", uid = uid, name = c.names[uid], thread_id = body.thread_id,
        message_id = body.last_read_message_id } }
end

-- 1039 {error: 0, message_id, sender_id, receiver_id, img_name, total_size: string,
-- thread_id}: an image (its file complete), remembered for /save
local function image(c, body)
    local from, id = num(body.sender_id), num(body.message_id)
    if not from or not id or type(body.img_name) ~= "string" then return {} end
    local img = { message_id = id, name = body.img_name, total_size = tonumber(body.total_size),
        sender_id = from, receiver_id = num(body.receiver_id) }
    c:remember_image(img)
    return { { kind = "image", from = from, name = c.names[from] or ("user " .. from),
        message_id = id, thread_id = body.thread_id, img_name = img.name,
        size = img.total_size } }
end

local BY_ID = { [msgids.NOTIFY_ADD_FRIEND] = apply, [msgids.NOTIFY_AUTH_FRIEND] = accepted,
    [msgids.NOTIFY_TEXT_CHAT] = text, [msgids.NOTIFY_GROUP_TEXT] = group_text,
    [msgids.NOTIFY_GROUP_EVENT] = group_event, [msgids.NOTIFY_READ] = read,
    [msgids.NOTIFY_IMAGE] = image }

-- events(client, id, body) -> array of events (a push the client does not know is passed on
-- as {kind="push", id=, body=})
function M.events(c, id, body)
    local fn = BY_ID[id]
    if not fn then return { { kind = "push", id = id, body = body } } end
    return fn(c, body)
end

return M

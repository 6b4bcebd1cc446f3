-- Group chats (docs/protocol.md §6.6): 1061 create, 1063 invite, 1065 group text, 1071
-- leave, 1073 remove, 1075 role, 1077 transfer, 1079 update, 1081 members, 1083 my groups.
-- The rules live here and in lib.groups (one transaction per change); the limits are
-- chat.group_* (read through M.limits at each request). Every change is pushed as 1069
-- {kind} to the members it concerns but the one who made it (who has the reply), on any
-- server (chat.fanout). A user who is not a member gets the answer a group that does not
-- exist gets (1015 thread_id): nobody learns that a group exists without being in it.
local errors = require "lib.errors"
local validate = require "lib.validate"
local groups = require "lib.groups"
local request = require "chat.request"
local reply = require "chat.reply"
local text = require "chat.text"
local save = require "chat.save"
local members = require "chat.members"
local fanout = require "chat.fanout"
local fit = require "chat.fit"
local settings = require "chat.settings"
local msgids = require "lib.msgids"
local host = require "host"

local M = {}

-- The limits in force: a function, so a reloaded rule applies from the next request.
function M.limits()
    return { max_members = settings.group_max_members,
        max_per_user = settings.group_max_per_user,
        name_max = settings.group_name_max_bytes }
end

local function denied(field, extra)
    local r = { error = errors.PermissionDenied, field = field }
    for k, v in pairs(extra or {}) do r[k] = v end
    return r
end

local function invalid(field, extra)
    local r = { error = errors.InvalidParams, field = field }
    for k, v in pairs(extra or {}) do r[k] = v end
    return r
end

-- A refusal of lib.groups -> the reply
local function refusal(r, limits)
    local why = r.refused
    if why == "unknown" then return denied("thread_id") end
    if why == "role" then return denied("role") end
    if why == "policy" then return denied("invite_policy") end
    if why == "not_friend" then return denied("members", { uid = r.uid }) end
    if why == "group_full" then return invalid("members", { limit = limits.max_members }) end
    if why == "user_full" then
        return invalid("members", { uid = r.uid, limit = limits.max_per_user })
    end
    if why == "not_member" then return invalid("uid") end
    if why == "rank" then return denied("uid") end
    error("unknown refusal " .. tostring(why))
end

local function name_ok(s)
    return s:find("%S") ~= nil and validate.text(s, M.limits().name_max)
end

local function policy_ok(s) return s == "anyone" or s == "admins" end
local function role_ok(s) return s == groups.ADMIN or s == groups.MEMBER end

-- uids of a request's member list: distinct uids, not the session's -> array | nil, reply
local function read_uids(list, uid)
    local out, seen = {}, {}
    for i, v in ipairs(list) do
        if not validate.uid(v) or v == uid or seen[v] then return nil, invalid("members") end
        seen[v] = true
        out[i] = v
    end
    return out
end

-- The 1069 body
local function event(kind, thread_id, by, fields)
    local body = { error = errors.Success, kind = kind, thread_id = thread_id, by = by }
    for k, v in pairs(fields or {}) do body[k] = v end
    return host.json.encode(body)
end

-- Sends the 1069 body to the group's members now (read again after the change) and to
-- extra uids, all but the session's user.
local function announce(session, thread_id, body, extra, gone)
    local ok, err = members.changed(thread_id, gone)
    if not ok then
        host.log.error("group ", thread_id, ": its member list version was not written (",
            tostring(err), "): other servers may use their old list until its next change")
    end
    local to = {}
    if not gone then
        local group, gerr = members.of(thread_id)
        if not group then
            host.log.warn("1069 of group ", thread_id, ": members: ", tostring(gerr))
        else
            for i, u in ipairs(group.uids) do to[i] = u end
        end
    end
    for _, u in ipairs(extra or {}) do to[#to + 1] = u end
    fanout.send(session, to, msgids.NOTIFY_GROUP_EVENT, body, session.uid)
end

-- Runs a change of lib.groups: -> its result | nil, reply (a refusal or a failure)
local function change(msg, fn, ...)
    local res, err = fn(...)
    if not res then return nil, reply.failed(msg, "group change", err) end
    if res.refused then return nil, refusal(res, M.limits()) end
    return res
end

local CREATE_FIELDS = {
    { name = "uid", kind = "uid", self = true },
    { name = "name", kind = "string", required = true, check = name_ok },
    { name = "members", kind = "array", default = {} },
}

-- 1061 {uid?, name, members?: [uid]} -> 1062 {error, thread_id, name, owner_uid, members}
function M.create(session, body)
    local f, bad = request.read(session, body, CREATE_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local uids, ubad = read_uids(f.members, uid)
    if not uids then return ubad end
    local res, no = change(msgids.CREATE_GROUP, groups.create, uid, f.name, uids, M.limits())
    if not res then return no end
    local all = host.json.array(res.uids)
    announce(session, res.thread_id, event("created", res.thread_id, uid,
        { name = f.name, owner_uid = uid, uids = all }))
    return { error = errors.Success, thread_id = res.thread_id, name = f.name, owner_uid = uid,
        members = all }
end

local INVITE_FIELDS = {
    { name = "thread_id", kind = "id", required = true },
    { name = "members", kind = "array", required = true },
}

-- 1063 {thread_id, members: [uid]} -> 1064 {error, thread_id, added}
function M.invite(session, body)
    local f, bad = request.read(session, body, INVITE_FIELDS)
    if not f then return bad end
    local uids, ubad = read_uids(f.members, session.uid)
    if not uids then return ubad end
    if #uids == 0 then return invalid("members") end
    local res, no = change(msgids.INVITE_GROUP, groups.invite, session.uid, f.thread_id, uids,
        M.limits())
    if not res then return no end
    local added = host.json.array(res.added)
    if #res.added > 0 then
        announce(session, f.thread_id, event("joined", f.thread_id, session.uid,
            { name = res.group.name, uids = added }))
    end
    return { error = errors.Success, thread_id = f.thread_id, added = added }
end

local THREAD_FIELDS = { { name = "thread_id", kind = "id", required = true } }

-- 1071 {thread_id} -> 1072 {error, thread_id, owner_uid?}
function M.leave(session, body)
    local f, bad = request.read(session, body, THREAD_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local res, no = change(msgids.LEAVE_GROUP, groups.leave, uid, f.thread_id)
    if not res then return no end
    announce(session, f.thread_id, event("left", f.thread_id, uid,
        { uids = host.json.array({ uid }), owner_uid = res.owner_uid }), nil, res.deleted)
    return { error = errors.Success, thread_id = f.thread_id, owner_uid = res.owner_uid }
end

local TARGET_FIELDS = {
    { name = "thread_id", kind = "id", required = true },
    { name = "uid", kind = "uid", required = true, other = true },
}

-- 1073 {thread_id, uid} -> 1074 {error, thread_id, uid}
function M.remove(session, body)
    local f, bad = request.read(session, body, TARGET_FIELDS)
    if not f then return bad end
    local res, no = change(msgids.REMOVE_MEMBER, groups.remove, session.uid, f.thread_id, f.uid)
    if not res then return no end
    announce(session, f.thread_id, event("removed", f.thread_id, session.uid,
        { uids = host.json.array({ f.uid }) }), { f.uid })
    return { error = errors.Success, thread_id = f.thread_id, uid = f.uid }
end

local ROLE_FIELDS = {
    { name = "thread_id", kind = "id", required = true },
    { name = "uid", kind = "uid", required = true, other = true },
    { name = "role", kind = "string", required = true, check = role_ok },
}

-- 1075 {thread_id, uid, role: "admin"|"member"} -> 1076 {error, thread_id, uid, role}
function M.set_role(session, body)
    local f, bad = request.read(session, body, ROLE_FIELDS)
    if not f then return bad end
    local res, no = change(msgids.SET_ROLE, groups.set_role, session.uid, f.thread_id, f.uid, f.role)
    if not res then return no end
    if res.changed then
        announce(session, f.thread_id, event("role", f.thread_id, session.uid,
            { uids = host.json.array({ f.uid }), role = f.role }))
    end
    return { error = errors.Success, thread_id = f.thread_id, uid = f.uid, role = f.role }
end

-- 1077 {thread_id, uid} -> 1078 {error, thread_id, owner_uid}
function M.transfer(session, body)
    local f, bad = request.read(session, body, TARGET_FIELDS)
    if not f then return bad end
    local res, no = change(msgids.TRANSFER_GROUP, groups.transfer, session.uid, f.thread_id, f.uid)
    if not res then return no end
    announce(session, f.thread_id, event("owner", f.thread_id, session.uid,
        { owner_uid = f.uid }))
    return { error = errors.Success, thread_id = f.thread_id, owner_uid = f.uid }
end

local UPDATE_FIELDS = {
    { name = "thread_id", kind = "id", required = true },
    { name = "name", kind = "string", check = name_ok },
    { name = "invite_policy", kind = "string", check = policy_ok },
}

-- 1079 {thread_id, name?, invite_policy?} -> 1080 {error, thread_id, name, invite_policy}
function M.update(session, body)
    local f, bad = request.read(session, body, UPDATE_FIELDS)
    if not f then return bad end
    local res, no = change(msgids.UPDATE_GROUP, groups.update, session.uid, f.thread_id, f.name,
        f.invite_policy)
    if not res then return no end
    local g = res.group
    announce(session, f.thread_id, event("updated", f.thread_id, session.uid,
        { name = g.name, invite_policy = g.invite_policy }))
    return { error = errors.Success, thread_id = f.thread_id, name = g.name,
        invite_policy = g.invite_policy }
end

local MEMBERS_FIELDS = {
    { name = "thread_id", kind = "id", required = true },
    { name = "uid", kind = "cursor", default = 0 },
}

-- 1081 {thread_id, uid?: cursor} -> 1082 {error, thread_id, members, load_more, next_uid}
function M.members(session, body)
    local f, bad = request.read(session, body, MEMBERS_FIELDS)
    if not f then return bad end
    local me, err = groups.member(f.thread_id, session.uid)
    if me == nil then return reply.failed(msgids.GROUP_MEMBERS, "membership", err) end
    if not me then return denied("thread_id") end
    local rows, rerr = groups.members(f.thread_id, f.uid, settings.page_size + 1)
    if not rows then return reply.failed(msgids.GROUP_MEMBERS, "members", rerr) end
    return fit.paged({ error = errors.Success, thread_id = f.thread_id, next_uid = f.uid },
        "members", rows, "next_uid", "uid")
end

local MY_FIELDS = { { name = "thread_id", kind = "cursor", default = 0 } }

-- 1083 {thread_id?: cursor} -> 1084 {error, groups, load_more, next_last_id}
function M.mine(session, body)
    local f, bad = request.read(session, body, MY_FIELDS)
    if not f then return bad end
    local rows, err = groups.of_user(session.uid, f.thread_id, settings.page_size + 1)
    if not rows then return reply.failed(msgids.MY_GROUPS, "groups", err) end
    return fit.paged({ error = errors.Success, next_last_id = f.thread_id }, "groups", rows,
        "next_last_id", "thread_id")
end

local TEXT_FIELDS = {
    { name = "fromuid", kind = "uid", self = true },
    { name = "thread_id", kind = "id", required = true },
    { name = "text_array", kind = "array", required = true },
}

-- 1065 {fromuid?, thread_id, text_array} -> 1066, push 1067 to the other members: the
-- 1017 rules and storage (one row per item, recv_id 0), the 1018 body with touid 0.
function M.text(session, body)
    local f, bad = request.read(session, body, TEXT_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local items, ibad = text.read_items(f.text_array)
    if not items then return ibad end
    local group, err = members.of(f.thread_id)
    if not group then return reply.failed(msgids.GROUP_TEXT, "members", err) end
    if not group.set[uid] then return denied("thread_id") end
    local stored, serr = save.store(uid, 0, f.thread_id, items)
    if not stored then
        return reply.failed(msgids.GROUP_TEXT, "store", serr,
            { fromuid = uid, touid = 0, thread_id = f.thread_id })
    end
    local parts = text.bodies(uid, 0, f.thread_id, stored)
    for _, part in ipairs(parts) do session:send(msgids.GROUP_TEXT + 1, part.json) end
    for _, part in ipairs(parts) do
        fanout.send(session, group.uids, msgids.NOTIFY_GROUP_TEXT, part.json, uid)
    end
    return nil
end

return M

-- 1009 apply -> 1010 (+ push 1011 to the target) and 1013 accept -> 1014 (+ push 1015 to
-- the applicant), docs/protocol.md §6. The applicant and the acceptor are always the
-- session's user. Accepting is one transaction (lib.friends.accept): both friend rows,
-- the pair's one private thread and the greeting messages, which the reply and the push
-- both carry. Pushes reach the other user on this server or through its chat server.
local errors = require "lib.errors"
local users = require "lib.users"
local friends = require "lib.friends"
local request = require "chat.request"
local reply = require "chat.reply"
local push = require "chat.push"
local wire = require "chat.wire"
local msgids = require "lib.msgids"

local M = {}

local TEXT_MAX = 255 -- friend_apply.descs, back_name and friend.back are VARCHAR(255)

local APPLY_FIELDS = {
    { name = "uid", kind = "uid", self = true },
    { name = "touid", kind = "uid", required = true, other = true },
    { name = "applyname", kind = "text", max = TEXT_MAX, default = "" },
    { name = "bakname", kind = "text", max = TEXT_MAX, default = "" },
}

local ACCEPT_FIELDS = {
    { name = "fromuid", kind = "uid", self = true },
    { name = "touid", kind = "uid", required = true, other = true },
    { name = "back", kind = "text", max = TEXT_MAX, default = "" },
}

local function notify_apply(session, applicant, touid, greeting)
    local req = wire.apply_pb(applicant, touid, greeting)
    push.post(session, touid, msgids.NOTIFY_ADD_FRIEND, wire.apply_from_pb(req), "ChatService.NotifyAddFriend", req)
end

-- 1009 {uid, applyname, bakname, touid}
function M.apply(session, body)
    local f, bad = request.read(session, body, APPLY_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local exists, err = users.exists(f.touid)
    if exists == nil then return reply.failed(msgids.ADD_FRIEND, "target", err) end
    if not exists then return { error = errors.UidInvalid } end
    local already, ferr = friends.are_friends(uid, f.touid)
    if already == nil then return reply.failed(msgids.ADD_FRIEND, "friendship", ferr) end
    if already then return { error = errors.Success } end -- nothing left to ask
    local applicant, perr = users.profile(uid)
    if not applicant then return reply.failed(msgids.ADD_FRIEND, "profile", perr or "own user is gone") end
    local ok, aerr = friends.apply(uid, f.touid, f.applyname, f.bakname)
    if not ok then return reply.failed(msgids.ADD_FRIEND, "apply", aerr) end
    notify_apply(session, applicant, f.touid, f.applyname)
    return { error = errors.Success }
end

local function notify_accept(session, acceptor, applicant_uid, result)
    local body = wire.accepted(acceptor.uid, applicant_uid, acceptor,
        wire.greetings(result.messages))
    push.post(session, applicant_uid, msgids.NOTIFY_AUTH_FRIEND, body, "ChatService.NotifyAuthFriend",
        wire.accepted_pb(acceptor.uid, applicant_uid, result.messages))
end

-- 1013 {fromuid, touid, back}
function M.accept(session, body)
    local f, bad = request.read(session, body, ACCEPT_FIELDS)
    if not f then return bad end
    local uid = session.uid
    local applicant, err = users.profile(f.touid)
    if err then return reply.failed(msgids.AUTH_FRIEND, "applicant", err) end
    if not applicant then return { error = errors.UidInvalid } end
    local result, aerr = friends.accept(uid, f.touid, f.back)
    if result == nil then return reply.failed(msgids.AUTH_FRIEND, "accept", aerr) end
    if not result then return { error = errors.PermissionDenied, field = "touid" } end
    local acceptor = users.profile(uid)
    if acceptor then notify_accept(session, acceptor, f.touid, result) end
    return { error = errors.Success, uid = applicant.uid, name = applicant.name,
        nick = applicant.nick, icon = applicant.icon, sex = applicant.sex,
        thread_id = result.thread_id, chat_datas = wire.greetings(result.messages) }
end

return M

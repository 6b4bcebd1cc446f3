-- ChatService (proto/message.proto), called by the other chat servers: each delivers a
-- push to the user's session on this server and answers error 0, or 1011 when the user is
-- not connected here (docs/protocol.md §4). RplyAddFriend and SendChatMsg are not
-- handled (the host answers UNIMPLEMENTED).
local host = require "host"
local errors = require "lib.errors"
local users = require "lib.users"
local sql = require "lib.sql"
local wire = require "chat.wire"
local msgids = require "lib.msgids"

local M = {}

-- deliver(uid, msg_id, body) -> error code
local function deliver(uid, msg_id, body)
    local session = host.sessions.get(uid)
    if not session then return errors.UidInvalid end
    local ok, err = session:send(msg_id, body)
    if not ok then
        host.log.info("push ", msg_id, " to uid ", uid, " not sent: ", tostring(err))
        return errors.UidInvalid
    end
    return errors.Success
end

M["ChatService.NotifyAddFriend"] = function(req)
    return { error = deliver(req.touid, msgids.NOTIFY_ADD_FRIEND, wire.apply_from_pb(req)), applyuid = req.applyuid,
        touid = req.touid }
end

M["ChatService.NotifyAuthFriend"] = function(req)
    local rsp = { error = errors.UidInvalid, fromuid = req.fromuid, touid = req.touid }
    if not host.sessions.get(req.touid) then return rsp end
    local acceptor, err = users.profile(req.fromuid)
    if not acceptor then
        host.log.warn("NotifyAuthFriend: profile of uid ", req.fromuid, ": ",
            tostring(err or "none"))
        acceptor = { name = "", nick = "", icon = "", sex = 0 }
    end
    local body = wire.accepted(req.fromuid, req.touid, acceptor,
        wire.greetings_from_pb(req.textmsgs, sql.now()))
    rsp.error = deliver(req.touid, msgids.NOTIFY_AUTH_FRIEND, body)
    return rsp
end

M["ChatService.NotifyTextChatMsg"] = function(req)
    local rsp = { error = deliver(req.touid, msgids.NOTIFY_TEXT_CHAT, wire.text_from_pb(req)), fromuid = req.fromuid,
        touid = req.touid, thread_id = req.thread_id }
    return rsp
end

M["ChatService.NotifyKickUser"] = function(req)
    local session = host.sessions.get(req.uid)
    if not session then return { error = errors.UidInvalid, uid = req.uid } end
    session.data.kicked = true -- the new login owns the presence keys
    session:send(msgids.NOTIFY_KICKED, { error = errors.Success, uid = req.uid })
    session:close("kicked")
    host.log.info("uid ", req.uid, " kicked by a login on another server (session ",
        session.id, ")")
    return { error = errors.Success, uid = req.uid }
end

return M

-- ChatService (proto/message.proto), called by the other chat servers (NotifyChatImgMsg:
-- by the resource role): each delivers a push to the user's session on this server and
-- answers error 0, or 1011 when the user is not connected here (docs/protocol.md §4);
-- NotifyBatch does so for several pushes at once and answers per push. RplyAddFriend and SendChatMsg are not
-- handled (the host answers UNIMPLEMENTED).
local host = require "host"
local errors = require "lib.errors"
local users = require "lib.users"
local sql = require "lib.sql"
local wire = require "chat.wire"
local msgids = require "lib.msgids"
local images = require "lib.images"

local M = {}

-- deliver(uid, msg_id, body) -> error code (also the push link's, chat.link)
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

-- An image's file is complete (the resource role, lib.images.notify_ready): 1039 to its
-- receiver's session here.
M["ChatService.NotifyChatImgMsg"] = function(req)
    return { error = deliver(req.to_uid, msgids.NOTIFY_IMAGE, images.ready_body(req)),
        from_uid = req.from_uid, to_uid = req.to_uid, message_id = req.message_id,
        file_name = req.file_name, total_size = req.total_size, thread_id = req.thread_id }
end

-- The pushes a NotifyBatch may carry: frames sent as they come, nothing done on the way
local PUSHES = { [1011] = true, [1015] = true, [1019] = true, [1039] = true,
    [msgids.NOTIFY_GROUP_TEXT] = true, [msgids.NOTIFY_GROUP_EVENT] = true, [msgids.NOTIFY_READ] = true }

-- A group push (touids): each of them here gets the body; those who are not read it from
-- history, so the item's outcome is 0.
local function deliver_each(touids, msg_id, body)
    host.sessions.send(touids, msg_id, body)
    return errors.Success
end

-- Pushes from one peer server, in its order: each item's body goes to its touid's session
-- here (to each of touids when it has them); errors[i] says what became of item i (0, 1011
-- not connected here, 1016 not a push).
-- The push link's 1205 (chat.link): the same delivery as NotifyBatch's.
M.link_pushes = require("chat.link").pushes(deliver, deliver_each, function(id) return PUSHES[id] == true end)

M["ChatService.NotifyBatch"] = function(req)
    local outcome = {}
    for i, it in ipairs(req.items) do
        if PUSHES[it.msg_id] and it.touids and #it.touids > 0 then
            outcome[i] = deliver_each(it.touids, it.msg_id, it.body)
        elseif PUSHES[it.msg_id] then
            outcome[i] = deliver(it.touid, it.msg_id, it.body)
        else
            host.log.warn("NotifyBatch: item ", i, " for uid ", it.touid, " has msg_id ",
                it.msg_id, ", not a push")
            outcome[i] = errors.InvalidParams
        end
    end
    return { error = errors.Success, errors = outcome }
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

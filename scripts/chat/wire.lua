-- chat.wire: the push bodies (1011, 1015, 1019) and the shapes of message lists on the
-- wire, built in one place so the same push has the same body whether it is delivered on
-- this server or arrives from a peer through ChatService (whose proto messages lack some
-- fields: those are filled in here). Field names and JSON types are those the original Qt
-- client sends and reads (docs/protocol.md §6; its quirks, kept on purpose, in §8).
local host = require "host"
local STATUS_READ = require("lib.messages").STATUS_READ

local M = {}

-- AddFriendReq of an application: applicant's public profile and greeting, for touid
function M.apply_pb(applicant, touid, greeting)
    return { applyuid = applicant.uid, name = applicant.name, desc = greeting,
        icon = applicant.icon, nick = applicant.nick, sex = applicant.sex, touid = touid }
end

-- AddFriendReq -> the 1011 push body (the sender's server builds it from its own request)
function M.apply_from_pb(req)
    return { error = 0, applyuid = req.applyuid, name = req.name, desc = req.desc,
        icon = req.icon, nick = req.nick, sex = req.sex }
end

-- Greeting messages of an accepted application (1014 reply, 1015 push): from
-- lib.friends.accept's messages.
function M.greetings(messages)
    local out = {}
    for i, m in ipairs(messages) do
        out[i] = { sender = m.sender, msg_id = m.message_id, thread_id = m.thread_id,
            unique_id = "", msg_content = m.content, chat_time = m.chat_time, status = m.status }
    end
    return host.json.array(out)
end

-- The same for AuthFriendReq.textmsgs
function M.greetings_pb(messages)
    local out = {}
    for i, m in ipairs(messages) do
        out[i] = { sender_id = m.sender, unique_id = "", msg_id = m.message_id,
            thread_id = m.thread_id, msgcontent = m.content, status = m.status }
    end
    return out
end

-- AuthFriendReq.textmsgs -> greetings (the proto has no time: the time of arrival)
function M.greetings_from_pb(textmsgs, chat_time)
    local out = {}
    for i, m in ipairs(textmsgs or {}) do
        out[i] = { sender = m.sender_id, msg_id = m.msg_id, thread_id = m.thread_id,
            unique_id = m.unique_id, msg_content = m.msgcontent, chat_time = chat_time,
            status = m.status }
    end
    return host.json.array(out)
end

-- The 1015 push body: fromuid accepted touid's application. acceptor: public profile
-- (name, nick, icon, sex); chat_datas: the greetings (greetings or greetings_from_pb), all
-- in the pair's thread, which is thread_id (accepting always writes the acceptor's one).
function M.accepted(fromuid, touid, acceptor, chat_datas)
    local first = chat_datas[1]
    return { error = 0, fromuid = fromuid, touid = touid, name = acceptor.name,
        nick = acceptor.nick, icon = acceptor.icon, sex = acceptor.sex,
        thread_id = first and first.thread_id, chat_datas = chat_datas }
end

-- AuthFriendReq of an acceptance: messages as lib.friends.accept gives them
function M.accepted_pb(fromuid, touid, messages)
    return { fromuid = fromuid, touid = touid, textmsgs = M.greetings_pb(messages) }
end

-- The 1018 reply and 1019 push body. items: {message_id, unique_id, content, chat_time}
function M.text(fromuid, touid, thread_id, items)
    local datas = {}
    for i, m in ipairs(items) do
        datas[i] = { message_id = m.message_id, unique_id = m.unique_id, content = m.content,
            status = STATUS_READ, chat_time = m.chat_time }
    end
    return { error = 0, fromuid = fromuid, touid = touid, thread_id = thread_id,
        chat_datas = host.json.array(datas) }
end

-- The same for TextChatMsgReq
function M.text_pb(fromuid, touid, thread_id, items)
    local msgs = {}
    for i, m in ipairs(items) do
        msgs[i] = { unique_id = m.unique_id, msg_id = m.message_id, msgcontent = m.content,
            chat_time = m.chat_time }
    end
    return { fromuid = fromuid, touid = touid, thread_id = thread_id, textmsgs = msgs }
end

-- TextChatMsgReq -> the 1019 body
function M.text_from_pb(req)
    local items = {}
    for i, m in ipairs(req.textmsgs or {}) do
        items[i] = { message_id = m.msg_id, unique_id = m.unique_id, content = m.msgcontent,
            chat_time = m.chat_time }
    end
    return M.text(req.fromuid, req.touid, req.thread_id, items)
end

-- A stored message in a 1030 page (unique_id is an integer 0 there, as in the original)
function M.history(row)
    return { sender = row.sender_id, receiver = row.recv_id, msg_id = row.message_id,
        thread_id = row.thread_id, unique_id = 0, msg_content = row.content,
        chat_time = row.created_at, status = row.status, msg_type = row.msg_type }
end

return M

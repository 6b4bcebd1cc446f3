-- lib.images: chat image messages (chat_message rows with msg_type 1), shared by the chat
-- role (1035 announces one, 1049 signs its URL, NotifyChatImgMsg delivers 1039) and the
-- resource role (the upload of its file; once complete, mark_complete and notify_ready).
-- A message's content is the image's name, the client's unique_name: valid_name keeps
-- it a plain file name, never a path.
local host = require "host"
local keys = require "lib.keys"

local M = {}

M.MSG_TYPE = 1          -- chat_message.msg_type of an image (0: text)
M.STATUS_UPLOADING = 3  -- announced by 1035, its file not complete yet (the original's UN_UPLOAD)
M.STATUS_READY = 2      -- its file is complete (as every text message: "read")

-- valid_name(name) -> true | false: "<stem>.<ext>", stem 1-64 of [A-Za-z0-9_-] not
-- starting with _ or -, ext 1-8 of [A-Za-z0-9]. No "/", no "..", no leading dot: never a
-- path. (The S2 client sends "<uuid>.<suffix>".)
function M.valid_name(name)
    if type(name) ~= "string" then return false end
    local stem, ext = name:match("^([A-Za-z0-9][A-Za-z0-9_%-]*)%.([A-Za-z0-9]+)$")
    return stem ~= nil and #stem <= 64 and #ext <= 8
end

-- get(message_id) -> row {message_id, thread_id, sender_id, recv_id, content (the name),
-- status, msg_type, created_at} | nil (no such image message) | nil, err
function M.get(message_id)
    local rows, err = host.db.query([[
SELECT message_id, thread_id, sender_id, recv_id, content, status, msg_type, created_at
FROM chat_message WHERE message_id = ? AND msg_type = ?]], message_id, M.MSG_TYPE)
    if not rows then return nil, err end
    return rows[1]
end

-- participant(uid, row) -> true | false: uid sent or receives the message of row
function M.participant(uid, row)
    return row ~= nil and (row.sender_id == uid or row.recv_id == uid)
end

-- complete(row) -> true | false: the image's file is complete (status ready)
function M.complete(row)
    return row.status == M.STATUS_READY
end

-- mark_complete(message_id[, q]) -> true (it was uploading, now ready) | false (no such
-- image message, or it was ready already) | nil, err. q: a transaction's runner
-- (lib.sql.tx) to write it in, else host.db.
function M.mark_complete(message_id, q)
    local res, err = (q or host.db).exec("UPDATE chat_message SET status = ? WHERE message_id = ?"
        .. " AND msg_type = ? AND status = ?", M.STATUS_READY, message_id, M.MSG_TYPE,
        M.STATUS_UPLOADING)
    if not res then return nil, err end
    return res.affected == 1
end

-- The 1039 push body, from NotifyChatImgReq fields (total_size a decimal string, as the
-- S2 client reads it).
function M.ready_body(req)
    return { error = 0, message_id = req.message_id, sender_id = req.from_uid,
        receiver_id = req.to_uid, img_name = req.file_name,
        total_size = ("%d"):format(tonumber(req.total_size) or 0), thread_id = req.thread_id }
end

-- The gRPC address of the chat server uid is logged in on: its liveness key's rpc (else
-- the config's address of that instance) | nil, why (offline, server dead)
local function server_of(uid)
    local name, err = host.redis.call("GET", keys.user_server(uid))
    if err then return nil, err end
    if not name then return nil, "offline" end
    local info, ierr = host.redis.call("GET", keys.chat_server(name))
    if ierr then return nil, ierr end
    if not info then return nil, "chat server " .. name .. " is not alive" end
    local d = host.json.safe.decode(info)
    if type(d) == "table" and type(d.rpc) == "string" then return d.rpc, name end
    local peer = host.config_instance("chat", name)
    if peer and peer.rpc_port then
        return (peer.public_host or "127.0.0.1") .. ":" .. tostring(peer.rpc_port), name
    end
    return nil, "no address for chat server " .. name
end

local function notify(row, total_size, timeout_ms)
    local address, where = server_of(row.recv_id)
    if not address then return false, where end
    local rsp, err, code = host.grpc.call(address, "ChatService.NotifyChatImgMsg", {
        from_uid = row.sender_id, to_uid = row.recv_id, message_id = row.message_id,
        file_name = row.content, total_size = total_size, thread_id = row.thread_id,
    }, { timeout_ms = timeout_ms or host.config.grpc.deadline_ms })
    if not rsp then
        return false, ("NotifyChatImgMsg to %s (%s): %s (%s)"):format(where, address,
            tostring(err), tostring(code))
    end
    if rsp.error ~= 0 then return false, "not connected on " .. where end
    return true
end

-- notify_ready(row, total_size, timeout_ms?) -> true (1039 delivered) | false: pushes
-- 1039 to the receiver of the image message row wherever the receiver is logged in,
-- through that chat server's ChatService.NotifyChatImgMsg (deadline timeout_ms, default
-- grpc.deadline_ms). Never raises: an offline receiver, a dead server or a failed call is
-- logged (the receiver sees the image in its 1030 history).
function M.notify_ready(row, total_size, timeout_ms)
    local ok, sent, why = pcall(notify, row, total_size, timeout_ms)
    if not ok then sent, why = false, sent end
    if not sent then
        local log = why == "offline" and host.log.info or host.log.warn
        log("1039 of message ", tostring(row and row.message_id), " to uid ",
            tostring(row and row.recv_id), " not delivered: ", tostring(why))
    end
    return sent
end

return M

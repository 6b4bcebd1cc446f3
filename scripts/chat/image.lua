-- 1035 image -> 1036 (docs/protocol.md §6.3): the sender announces an image message before
-- uploading its file to the resource server. Only between friends, in their own private
-- thread (1015 otherwise), as 1017; the name must be a plain file name
-- (lib.images.valid_name, never a path), md5 32 hex digits. The message is stored
-- (chat_message msg_type 1, status 3 "uploading", content = the name; group commit,
-- chat.batch) before the 1036 that carries its message_id, which the upload (1041) names.
-- Nobody else hears of it yet: the resource role pushes 1039 to the receiver once the
-- file is complete (lib.images.notify_ready). A resend of the same unique_id is answered
-- with the message stored first (chat.save). token and text_or_url (the sender's local
-- path) are ignored: the session is the identity.
--
-- 1049 url -> 1050: a signed plain HTTP URL of an image's file on the resource server
-- (lib.signed_url; for the web client and curl): only for the sender or receiver of that
-- image message, only once its file is complete.
local host = require "host"
local errors = require "lib.errors"
local signed_url = require "lib.signed_url"
local images = require "lib.images"
local request = require "chat.request"
local reply = require "chat.reply"
local save = require "chat.save"
local msgids = require "lib.msgids"

local M = {}

local MSG = msgids.IMAGE_CHAT

local function md5_hex(v) return #v == 32 and v:match("^%x+$") ~= nil end
local function unique_id_ok(v) return #v <= save.UNIQUE_ID_MAX end

local FIELDS = {
    { name = "fromuid", kind = "uid", self = true },
    { name = "touid", kind = "uid", required = true, other = true },
    { name = "thread_id", kind = "id", required = true },
    { name = "md5", kind = "string", required = true, check = md5_hex },
    { name = "name", kind = "string", required = true, check = images.valid_name },
    { name = "unique_id", kind = "string", default = "", check = unique_id_ok },
}

-- 1035 {fromuid?, touid, thread_id, md5, name, unique_id?}
function M.announce(session, body)
    local f, bad = request.read(session, body, FIELDS)
    if not f then return bad end
    local uid = session.uid
    local ok, aerr = save.allowed(session, f.touid, f.thread_id)
    if ok == nil then return reply.failed(MSG, "thread check", aerr) end
    if not ok then return { error = errors.PermissionDenied, field = "thread_id" } end
    local item = { content = f.name, unique_id = f.unique_id, msg_type = images.MSG_TYPE,
        status = images.STATUS_UPLOADING }
    local stored, serr = save.store(uid, f.touid, f.thread_id, { item })
    if not stored then
        return reply.failed(MSG, "store", serr, { fromuid = uid, touid = f.touid,
            thread_id = f.thread_id, unique_name = f.name, unique_id = f.unique_id })
    end
    return { error = errors.Success, fromuid = uid, touid = f.touid, thread_id = f.thread_id,
        md5 = f.md5, unique_name = item.content, unique_id = f.unique_id,
        chat_time = item.chat_time, status = item.status, message_id = item.message_id }
end

local URL_FIELDS = { { name = "message_id", kind = "id", required = true } }

-- The resource server's HTTP address as clients dial it (IPv6 in brackets): https through
-- the TLS proxy (docs/protocol.md §5.6).
local function http_base()
    local res, proxy = host.config.resource, host.config.tls_proxy
    local h = proxy.enabled and proxy.public_host or res.public_host
    if h:find(":", 1, true) then h = "[" .. h .. "]" end
    if not proxy.enabled then return ("http://%s:%d"):format(h, res.http_port) end
    return ("https://%s:%d"):format(h, res.public_http_port)
end

-- 1049 {message_id}
function M.url(session, body)
    local f, bad = request.read(session, body, URL_FIELDS)
    if not f then return bad end
    local id = f.message_id
    local row, err = images.get(id)
    if err then
        return reply.failed(msgids.IMAGE_URL, "image message", err, { message_id = id })
    end
    if not row then return { error = errors.FileNotFound, message_id = id } end
    if not images.participant(session.uid, row) then
        return { error = errors.NotParticipant, message_id = id }
    end
    if not images.complete(row) then return { error = errors.UploadIncomplete, message_id = id } end
    local path, expires = signed_url.sign("/files/" .. ("%d"):format(id),
        host.config.resource.url_ttl_s)
    if not path then
        host.log.error("1049: ", expires, ": no image URL can be signed")
        return { error = errors.Internal, message_id = id }
    end
    return { error = errors.Success, message_id = id, url = http_base() .. path,
        expires = expires }
end

return M

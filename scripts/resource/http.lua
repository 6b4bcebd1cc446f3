-- resource.http: plain HTTP downloads on resource.http_port (docs/protocol.md §13.8), for
-- the web client and curl: GET (or HEAD) /files/<message_id> and /avatars/<name>, each with
-- the query e=<unix expiry>&s=<signature> of lib.signed_url (the chat role's 1049 hands out
-- /files links to the participants of a complete image). Bad or missing signature 403,
-- expired 403, unknown or incomplete 404; the file streams off the loop with Range (206,
-- 416) through the host's req:send_file.
local host = require "host"
local errors = require "lib.errors"
local failure = require "lib.failure"
local images = require "lib.images"
local signed_url = require "lib.signed_url"
local download = require "resource.download"
local upload = require "resource.upload"
local uploads = require "resource.uploads"

local M = {}

local function refuse(status, code, reason)
    return status, { ["cache-control"] = "no-store" }, { error = code, reason = reason }
end

-- The signature of the request's path -> true | status, headers, body of the refusal
local function signed(req)
    local q = req.query
    local ok, why = signed_url.verify(req.path, q.e, q.s)
    if not ok then return nil, refuse(403, errors.PermissionDenied, why) end
    return true
end

-- The response for a complete upload's row, or the refusal for what the look-up answered
-- instead (code: a resource.download error).
local function send(req, row, code)
    if not row then
        if code == errors.ServerBusy or code == errors.Internal then return refuse(503, code, "busy") end
        return refuse(404, code, code == errors.UploadIncomplete and "incomplete" or "not found")
    end
    local res, err, ecode = req:send_file(upload.store:object_path(row.hash), {
        range = req.headers.range, content_type = row.mime or "application/octet-stream",
        headers = { ["cache-control"] = "private, max-age=300" } })
    if res then return res end
    host.log.warn("HTTP ", req.path, ": ", tostring(err))
    if ecode == "ENOENT" then return refuse(404, errors.FileNotFound, "not found") end
    return refuse(500, errors.StorageFailed, "storage")
end

-- GET /files/<message_id>?e=&s=
function M.file(req)
    local id = req.path:match("^/files/(%d+)$")
    if not id or #id > 15 then return refuse(404, errors.FileNotFound, "not found") end
    local ok, status, headers, body = signed(req)
    if not ok then return status, headers, body end
    local msg, err = images.get(tonumber(id))
    if err then return refuse(503, failure.code(err), "busy") end
    if not msg then return refuse(404, errors.FileNotFound, "not found") end
    return send(req, download.image_upload(msg))
end

-- GET /avatars/<name>?e=&s=
function M.avatar(req)
    local name = req.path:match("^/avatars/([^/]+)$")
    if not images.valid_name(name) then return refuse(404, errors.FileNotFound, "not found") end
    local ok, status, headers, body = signed(req)
    if not ok then return status, headers, body end
    return send(req, download.complete_upload(uploads.AVATAR, name))
end

M.routes = {
    ["GET /files/*"] = M.file, ["HEAD /files/*"] = M.file,
    ["GET /avatars/*"] = M.avatar, ["HEAD /avatars/*"] = M.avatar,
}

return M

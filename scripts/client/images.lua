-- client.images: images in the terminal client (issue 13). The resource connection
-- (client.res_conn) is opened after the chat login, at the address the gate's login reply
-- names (reshost/resport), and kept for the session; without it images are unavailable
-- (a sentence says why) and chat goes on. Sending (send_image): the file checked (exists,
-- at most resource.max_file_bytes, an image by its first bytes), named <uuid>.<ext>, 1035
-- on the chat connection, then the upload with the 1036's message_id. Receiving: 1039
-- pushes and history items of images are remembered (remember_image), save_image
-- downloads one (1045 first when its size is not known) to a file that is never an
-- existing one, image_url asks the chat server for a signed HTTP URL (1049). Methods of
-- client.api's Client.
local host = require "host"
local store = require "lib.store"
local msgids = require "lib.msgids"
local sentences = require "client.sentences"
local res_conn = require "client.res_conn"
local md5 = require "client.md5"
local requests = require "client.requests"

local M = {}
local Client = {}
M.methods = Client

local function invalid(msg) return nil, msg, "invalid" end

local READ_STEP = 1048576 -- a file is read this much at a time

-- ---- the resource connection ---------------------------------------------------------

-- resource_at(gate_reply): where the resource server is, from the login reply (over TLS
-- when the reply says its addresses are the TLS proxy's).
function Client:resource_at(gate)
    local port = tonumber(gate.resport)
    if type(gate.reshost) == "string" and gate.reshost ~= "" and port then
        self.res_addr = { host = gate.reshost, port = port, tls = gate.tls }
    else
        self.res_addr = nil
    end
end

local function res_where(addr)
    return ("resource server at %s:%d"):format(addr.host, addr.port)
end

-- open_resource() -> true | nil, sentence: the resource connection of the session,
-- opened now if there is none (the reason of a failure is kept in self.res_error).
function Client:open_resource()
    if self.res then return true end
    local addr = self.res_addr
    if not addr then
        self.res_error = sentences.NO_RESOURCE .. ": the gate named no resource server"
        return nil, self.res_error
    end
    local conn, err = res_conn.open { host = addr.host, port = addr.port, tls = addr.tls,
        ca_file = self.cfg.ca_file, connect_timeout_ms = self.cfg.connect_timeout_ms,
        timeout_ms = self.cfg.request_timeout_ms, attempts = self.cfg.retry_attempts }
    if not conn then
        self.res_error = sentences.NO_RESOURCE .. ": " .. sentences.network(res_where(addr), err)
        return nil, self.res_error
    end
    self.res, self.res_error = conn, nil
    return true
end

function Client:close_resource()
    local conn = self.res
    self.res = nil
    if conn then conn:close() end
end

-- The connection for a transfer: -> conn | nil, sentence, "images"
local function resource(c)
    if not c.me then return c:offline() end
    local ok, err = c:open_resource()
    if not ok then return nil, err, "images" end
    return c.res
end

-- A failed transfer as a sentence: the server's code, or the network.
local function transfer_failed(c, err, r)
    if r then return nil, sentences.of(r.error, r), r.error end
    return nil, sentences.NO_RESOURCE .. ": " .. sentences.network(res_where(c.res_addr), err),
        "network"
end

local function session_keys(c)
    return { uid = c.me.uid, token = c.res_token }
end

-- ---- sending ---------------------------------------------------------------------------

-- read_image(path) -> {data, ext} | nil, sentence: the whole file, when it is an image the
-- server takes (kind by its first bytes, size within resource.max_file_bytes)
function Client:read_image(path)
    if type(path) ~= "string" or path == "" then return nil, "Name the image file: /image PATH" end
    local st = host.file.stat(path)
    if not st then return nil, ("No such file: %s"):format(path) end
    if st.kind ~= "file" then return nil, ("%s is not a file"):format(path) end
    if st.size == 0 then return nil, ("%s is empty"):format(path) end
    local max = self.cfg.image_max_bytes
    if st.size > max then
        return nil, ("%s is %d bytes; an image may be at most %d bytes"):format(path, st.size, max)
    end
    local f, err = host.file.open(path, "r")
    if not f then return nil, ("Cannot read %s: %s"):format(path, tostring(err)) end
    local parts, off = {}, 0
    while off < st.size do
        local s, rerr = f:read(off, READ_STEP)
        if not s then
            f:close()
            return nil, ("Cannot read %s: %s"):format(path, tostring(rerr))
        end
        if s == "" then break end
        parts[#parts + 1] = s
        off = off + #s
    end
    f:close()
    local data = table.concat(parts)
    local kind = store.sniff(data:sub(1, 12), self.cfg.image_types)
    if not kind then
        return nil, ("%s is not an image the server takes (%s)"):format(path,
            table.concat(self.cfg.image_types, ", "))
    end
    if #data > max then
        return nil, ("%s is %d bytes; an image may be at most %d bytes"):format(path, #data, max)
    end
    return { data = data, ext = kind == "jpeg" and "jpg" or kind }
end

-- send_image(uid, path, on_progress?) -> {to, message_id, thread_id, name, size, time} once
-- the file is uploaded (the receiver then gets 1039) | nil, sentence, code.
-- on_progress(bytes confirmed, total) after each chunk the server acknowledged.
function Client:send_image(v, path, on_progress)
    local uid, msg, code = self:other(v)
    if not uid then return nil, msg, code end
    local conn, rerr, rcode = resource(self)
    if not conn then return nil, rerr, rcode end
    local img, ierr = self:read_image(path)
    if not img then return invalid(ierr) end
    local thread_id, terr, tcode = self:thread_with(uid)
    if not thread_id then return nil, terr, tcode end
    local name = requests.unique_id():sub(2, -2) .. "." .. img.ext
    local sum = md5.hex(img.data)
    local ack, err, ecode = self:chat_request(msgids.IMAGE_CHAT, { fromuid = self.me.uid,
        touid = uid, thread_id = thread_id, md5 = sum, name = name,
        unique_id = requests.unique_id() }, false)
    if not ack then return nil, err, ecode end
    if type(ack.message_id) ~= "number" then return nil, sentences.BAD_REPLY, "reply" end
    local keys = session_keys(self)
    local last, uerr, bad = conn:upload({ uid = keys.uid, token = keys.token,
        name = ack.unique_name or name, data = img.data, message_id = ack.message_id,
        sender = ack.fromuid or self.me.uid, receiver = ack.touid or uid,
        md5 = sum }, on_progress)
    if not last then return transfer_failed(self, uerr, bad) end
    self:remember_image { message_id = ack.message_id, name = ack.unique_name or name,
        total_size = #img.data, sender_id = self.me.uid, receiver_id = uid }
    return { to = uid, name = ack.unique_name or name, size = #img.data,
        message_id = ack.message_id, thread_id = ack.thread_id or thread_id,
        time = ack.chat_time }
end

-- ---- receiving -------------------------------------------------------------------------

-- remember_image{message_id, name, total_size?, sender_id, receiver_id}: what a 1039 or a
-- history item says of an image, so that /save needs no 1045 for it.
function Client:remember_image(img)
    if type(img.message_id) ~= "number" then return end
    self.images[img.message_id] = img
end

-- image_info(message_id) -> {message_id, name, total_size, sender_id, receiver_id} | nil,
-- sentence, code: remembered, or asked with 1045
function Client:image_info(id)
    local known = self.images[id]
    if known and tonumber(known.total_size) then return known end
    local conn, err, code = resource(self)
    if not conn then return nil, err, code end
    local r, ierr, bad = conn:info(session_keys(self), id)
    if not r then return transfer_failed(self, ierr, bad) end
    local img = { message_id = id, name = r.name, total_size = tonumber(r.total_size),
        sender_id = r.sender_id, receiver_id = r.recv_id }
    self:remember_image(img)
    return img
end

-- The images folder: client.images_dir, else $XDG_DATA_HOME/chathost/images, else
-- ~/.local/share/chathost/images.
function Client:images_dir()
    if self.cfg.images_dir then return self.cfg.images_dir end
    local xdg, home = os.getenv("XDG_DATA_HOME"), os.getenv("HOME")
    if xdg and xdg ~= "" then return xdg .. "/chathost/images" end
    return (home or ".") .. "/.local/share/chathost/images"
end

-- Where an image goes: path as given (inside it when it is a folder), else the images
-- folder, under the image's name. -> path | nil, sentence
function Client:save_path(path, name)
    if not path or path == "" then
        local dir = self:images_dir()
        local ok, err = host.file.mkdirs(dir)
        if not ok then return nil, ("Cannot make the folder %s: %s"):format(dir, tostring(err)) end
        return dir .. "/" .. name
    end
    local st = host.file.stat(path)
    if st and st.kind == "directory" then return path:gsub("/+$", "") .. "/" .. name end
    return path
end

-- save_image(message_id, path?) -> {path, size, message_id} | nil, sentence, code. An
-- existing file is never overwritten (code "exists"); a download that fails leaves no file.
function Client:save_image(id, path)
    id = tonumber(id)
    if not id or id < 1 or id % 1 ~= 0 then
        return invalid("Name the image by its message id: /save ID [PATH]")
    end
    local img, err, code = self:image_info(id)
    if not img then return nil, err, code end
    local target, perr = self:save_path(path, img.name)
    if not target then return invalid(perr) end
    local f, ferr, errno = host.file.open(target, "wx")
    if not f then
        if errno == "EEXIST" then
            return nil, ("%s exists already; it was not overwritten (/save %d OTHER_PATH)")
                :format(target, id), "exists"
        end
        return nil, ("Cannot write %s: %s"):format(target, tostring(ferr)), "file"
    end
    local conn, cerr, ccode = resource(self)
    local size, derr, bad, write_err
    if conn then
        size, derr, bad = conn:download(session_keys(self), img, function(offset, data)
            local ok, werr = f:write(offset, data)
            if ok then return true end
            write_err = ("Cannot write %s: %s"):format(target, tostring(werr))
            return nil, write_err
        end)
    end
    f:close()
    if not size then
        host.file.unlink(target)
        if not conn then return nil, cerr, ccode end
        if write_err then return nil, write_err, "file" end
        return transfer_failed(self, derr, bad)
    end
    return { path = target, size = size, message_id = id }
end

-- image_url(message_id) -> {url, expires} | nil, sentence, code (1049: a signed HTTP URL)
function Client:image_url(id)
    id = tonumber(id)
    if not id or id < 1 or id % 1 ~= 0 then
        return invalid("Name the image by its message id: /url ID")
    end
    local r, err, code = self:chat_request(msgids.IMAGE_URL, { message_id = id }, true)
    if not r then return nil, err, code end
    if type(r.url) ~= "string" then return nil, sentences.BAD_REPLY, "reply" end
    return { url = r.url, expires = r.expires, message_id = id }
end

return M

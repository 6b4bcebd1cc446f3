-- helpers.res_cluster: the resource role as a real process for the resource specs (its
-- storage in a folder of the spec's, so a restarted process finds its files again), plus
-- image messages written straight into MariaDB (what the chat role's 1035 stores).
local host = require "host"
local roles = require "helpers.roles"
local cluster = require "helpers.chat_cluster"

local M = {}

-- start{dir=?, resource=? (settings over the spec defaults), mysql=? (settings over the
-- defaults: its address comes from the environment), copy_scripts=?, edit=?, env=?} ->
-- role with .port (the resource channel), .http_port, .dir (the storage root)
function M.start(opts)
    opts = opts or {}
    local dir = opts.dir or (assert(host.fs.mkdtemp("resfiles")) .. "/files")
    local http_port
    local role = roles.start { role = "resource", copy_scripts = opts.copy_scripts,
        edit = opts.edit, env = opts.env, config = function(port)
            http_port = roles.free_port()
            local r = { port = port, http_port = http_port, admin_port = 0, dir = dir,
                sweep_interval_ms = 100 }
            for k, v in pairs(opts.resource or {}) do r[k] = v end
            return { resource = r, mysql = opts.mysql }
        end }
    role.http_port, role.files = http_port, dir
    return role
end

-- session_user() -> a user (helpers.chat_cluster.user) whose resource session is open: what
-- a chat login leaves (restoken_<uid> = the login's token), without a chat server
function M.session_user()
    local u = cluster.user()
    assert(host.redis.call("SET", "restoken_" .. u.uid, u.token, "EX", 600))
    return u
end

-- image_message(sender, receiver, thread_id, name) -> message_id: an image message as 1035
-- stores it (msg_type 1, status 3 "uploading", content = the name)
function M.image_message(sender, receiver, thread_id, name)
    local res = assert(host.db.exec("INSERT INTO chat_message (thread_id, sender_id, recv_id, "
        .. "content, status, msg_type) VALUES (?, ?, ?, ?, 3, 1)", thread_id, sender.uid,
        receiver.uid, name))
    return res.insert_id
end

-- image_upload(size[, friends]) -> a, b, u: two users whose resource sessions are open, an
-- image message from a to b (in their friends' thread when friends, else thread 1) and
-- the upload's fields for helpers.res_client: {uid, token, name, receiver, message_id,
-- data (a PNG of size bytes)}
function M.image_upload(size, friends)
    local a, b = M.session_user(), M.session_user()
    local thread = friends and cluster.befriend(a, b) or 1
    local name = M.name()
    return a, b, { uid = a.uid, token = a.token, name = name, receiver = b.uid,
        message_id = M.image_message(a, b, thread, name), data = require("helpers.res_client").png(size) }
end

-- A fresh image name as the client makes them ("<uuid>.<suffix>")
function M.name(ext)
    return host.crypto.random_hex(16) .. "." .. (ext or "png")
end

-- The upload row of name (kind 2 unless given): {upload_id, state, owner_uid, total_size,
-- hash (nil until complete)} | nil
function M.upload_row(name, kind)
    local row = assert(host.db.query("SELECT upload_id, state, owner_uid, total_size, "
        .. "LOWER(HEX(content_hash)) AS hash FROM upload WHERE kind = ? AND name = ?", kind or 2, name))[1]
    if row and row.hash == host.null then row.hash = nil end
    return row
end

-- The tally of an unfinished upload (lib.store: a byte per chunk after its data in the
-- partial file) -> chunks tallied, {seq = true} of those | 0, {} (no partial file)
function M.tallied(role, name, kind)
    local row = assert(M.upload_row(name, kind))
    local bytes = host.fs.read(role.files .. "/partial/" .. row.upload_id) or ""
    local n, set = 0, {}
    for seq = 1, math.ceil(row.total_size / 32768) do
        local b = bytes:byte(row.total_size + seq)
        if b and b ~= 0 then
            n = n + 1
            set[seq] = true
        end
    end
    return n, set
end

return M

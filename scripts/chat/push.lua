-- chat.push: delivers a push (1011, 1015, 1019, 1021) to a user wherever the user is
-- connected: a session on this server directly, else the chat server named by uip_<uid>
-- through its ChatService (gRPC with a deadline), which delivers to its own session. An
-- offline user gets nothing: what matters is stored and read at the next login.
--
-- A peer's gRPC address is what it announces in its liveness key chatserver_<name>
-- ({host, port, rpc}), else chat.instances[name] of the config; a server without a
-- liveness key is dead and not called (no deadline spent on it). Looked up at most every
-- ADDRESS_TTL_MS per name.
local host = require "host"
local keys = require "lib.keys"
local presence = require "chat.presence"
local settings = require "chat.settings"
local serial = require "lib.serial"

local M = {}

local ADDRESS_TTL_MS = 2000
local addresses = {} -- name -> { address, at }

-- The peer's own settings as the peer resolves them (shared chat settings + its
-- instance): the address it announces to clients, and its rpc_port.
local function configured(name)
    local peer = host.config_instance("chat", name)
    if not peer or not peer.rpc_port then return nil end
    return (peer.public_host or "127.0.0.1") .. ":" .. tostring(peer.rpc_port)
end

-- The address a live server announces: its rpc field, else (an announcement without
-- one) the config's. No liveness key: the server is dead, nil.
local function lookup(name)
    local info, err = host.redis.call("GET", keys.chat_server(name))
    if err then return configured(name) end -- Redis trouble: the config is the best guess
    if not info then return nil end
    local d = host.json.safe.decode(info)
    if type(d) == "table" and type(d.rpc) == "string" then return d.rpc end
    return configured(name)
end

-- address(name) -> "host:port" of chat server name's gRPC | nil (dead or unknown)
function M.address(name)
    local now = host.timer.monotonic()
    local hit = addresses[name]
    if hit and now - hit.at < ADDRESS_TTL_MS then return hit.address end
    local address = lookup(name)
    addresses[name] = { address = address, at = now }
    return address
end

-- call(server, method, req, timeout_ms?) -> rsp | nil, err
function M.call(server, method, req, timeout_ms)
    local address = M.address(server)
    if not address then return nil, "chat server " .. tostring(server) .. " is not alive" end
    local rsp, err, code = host.grpc.call(address, method, req,
        { timeout_ms = timeout_ms or settings.rpc_timeout_ms })
    if not rsp then
        host.log.warn(method, " to ", server, " (", address, ") failed: ", tostring(err),
            " (", tostring(code), ")")
        return nil, err
    end
    return rsp
end

local function failed(msg_id, uid, err)
    host.log.warn(msg_id, " to uid ", uid, " failed: ", tostring(err))
end

-- Sends body to uid's session on this server, if there is one: -> true (sent or failed
-- and logged) | false (uid has no session here)
local function send_here(uid, msg_id, body)
    local here = host.sessions.get(uid)
    if not here then return false end
    local ok, err = here:send(msg_id, body)
    if not ok then failed(msg_id, uid, err) end
    return true
end

-- A push that did not reach uid at server (the call failed, or uid is no longer connected
-- there): uid may have moved while it waited. A session here gets body; one on a third
-- server gets req there (once, no further chase).
local function redirect(server, uid, msg_id, body, method, req)
    if send_here(uid, msg_id, body) then return end
    local now = presence.where(uid)
    if now and now ~= server and now ~= settings.name and M.address(now) then
        M.call(now, method, req)
    end
end

local function call_or_redirect(server, uid, msg_id, body, method, req)
    local rsp = M.call(server, method, req) -- a failed call is logged there
    if not rsp or rsp.error ~= 0 then redirect(server, uid, msg_id, body, method, req) end
end

-- A queued push, run by its queue's task.
local function deliver(...)
    local ok, err = pcall(call_or_redirect, ...)
    host.metrics.inc("chathost_chat_pushes_queue_done_total", 1, nil,
        "pushes through a push queue that ended (sent or failed)")
    if not ok then error(err, 0) end
end

local function entered()
    host.metrics.inc("chathost_chat_pushes_queued_total", 1, nil,
        "pushes that went through a push queue (chat.push_queue_max)")
end

-- The session's push queue to server: one per (sending session, peer server), so pushes
-- to one user keep their order and a stuck server holds up only the pushes to it. A
-- queue made by an older script generation is replaced once it is idle.
local function queue(session, server)
    local data = session.data
    local queues = data.push_queues
    if not queues then
        queues = {}
        data.push_queues = queues
    end
    local q = queues[server]
    if not q or (getmetatable(q) ~= serial and q:idle()) then
        q = serial.new(settings.push_queue_max, entered)
        queues[server] = q
    end
    return q
end

-- How long a push waits for room in a full queue: as long as the push ahead of it may
-- take (an address lookup and the call's deadline), and as long again, so a push is
-- dropped only when its queue has not moved for that long; but at most half the
-- handler's own time (chat.handler_timeout_ms), which would cut the handler off instead.
local function room_wait_ms()
    return math.min(2 * (settings.rpc_timeout_ms + host.config.redis.command_timeout_ms),
        math.floor(host.config.self.handler_timeout_ms / 2))
end

-- post(session, uid, msg_id, body, method, req): sends a push on behalf of the user of
-- session without holding up that session's next frames while a peer server answers. A
-- user on this server gets body at once. A user on another server is looked up (uip_),
-- then req goes to method there through the session's queue to that server (lib.serial):
-- the pushes keep their order, and a stuck peer costs the sender's next requests nothing
-- until settings.push_queue_max pushes wait for it. Then post waits for room
-- (back-pressure: a sender cannot run ahead of its pushes without bound), at most
-- room_wait_ms; still no room: the push is dropped, logged and counted
-- (chathost_chat_pushes_dropped_total). What it announces is stored: the peer reads it at
-- its next page load. An offline user, or one whose server died, gets nothing.
function M.post(session, uid, msg_id, body, method, req)
    if send_here(uid, msg_id, body) then return end
    local server, err = presence.where(uid)
    if err then return failed(msg_id, uid, err) end
    if not server or server == settings.name then return end -- offline
    if not M.address(server) then return end                 -- its server died with it
    local q = queue(session, server)
    if q:post(room_wait_ms(), deliver, server, uid, msg_id, body, method, req) then return end
    host.metrics.inc("chathost_chat_pushes_dropped_total", 1, nil,
        "pushes dropped: their push queue did not move (chat.push_queue_max, chat.push_timeout_ms)")
    host.log.warn(msg_id, " to uid ", uid, " dropped: the push queue of session ", session.id,
        " to ", server, " did not move in ", room_wait_ms(), " ms (chat.push_queue_max, ",
        settings.push_queue_max, ")")
end

return M

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
    return nil, err
end

-- post(session, uid, msg_id, body, method, req): send, on behalf of the user of session,
-- without holding up that session's next frames while a peer server answers. A push to a
-- session on this server with nothing queued before it goes out at once; one that needs a
-- lookup or a peer's answer goes through the session's own queue (lib.serial): the
-- sender's pushes keep their order, and a stuck peer server costs the sender's next
-- requests nothing until settings.push_queue_max pushes wait. Then post waits for room
-- (back-pressure: a sender cannot run ahead of its pushes without bound), at most the push
-- deadline; still no room: the push is dropped, logged and counted
-- (chat_pushes_dropped_total). What it announces is stored: the peer reads it at its next
-- page load. chat_pushes_queued_total counts the pushes that went through a queue,
-- chat_pushes_queue_done_total those of them that ended (sent or failed): the difference
-- is the backlog.
local function deliver(...)
    local ok, err = pcall(M.send, ...)
    host.metrics.inc("chat_pushes_queue_done_total", 1, nil,
        "pushes through a session's push queue that ended (sent or failed)")
    if not ok then error(err, 0) end
end

function M.post(session, uid, msg_id, body, method, req)
    local data = session.data
    local q = data.pushq
    if not q or q:idle() then
        local peer = host.sessions.get(uid)
        if peer then
            local ok, err = peer:send(msg_id, body)
            if not ok then failed(msg_id, uid, err) end
            return
        end
    end
    if not q then
        q = serial.new(settings.push_queue_max)
        data.pushq = q
    end
    -- deliver of the generation that posts (a session outlives script reloads)
    if q:post(settings.rpc_timeout_ms, deliver, uid, msg_id, body, method, req) then
        host.metrics.inc("chat_pushes_queued_total", 1, nil,
            "pushes that went through a session's push queue (chat.push_queue_max)")
        return
    end
    host.metrics.inc("chat_pushes_dropped_total", 1, nil,
        "pushes dropped: the sender's chat.push_queue_max waiting ones did not move in chat.push_timeout_ms")
    host.log.warn(msg_id, " to uid ", uid, " dropped: session ", session.id, " had ",
        settings.push_queue_max, " pushes waiting for ", settings.rpc_timeout_ms,
        " ms (chat.push_queue_max, chat.push_timeout_ms)")
end

-- send(uid, msg_id, body, method, req) -> "local" | "remote" | "offline" | nil, err
-- body goes to uid's session here; else req goes to method at uid's server. A failure is
-- logged (once: a failed call by M.call).
function M.send(uid, msg_id, body, method, req)
    local session = host.sessions.get(uid)
    if session then
        local ok, err = session:send(msg_id, body)
        if not ok then return failed(msg_id, uid, err) end
        return "local"
    end
    local server, err = presence.where(uid)
    if err then return failed(msg_id, uid, err) end
    if not server or server == settings.name then return "offline" end
    if not M.address(server) then return "offline" end -- its server died with it
    local rsp, cerr = M.call(server, method, req)
    if not rsp then return nil, cerr end
    if rsp.error ~= 0 then return "offline" end -- not (or no longer) connected there
    return "remote"
end

return M

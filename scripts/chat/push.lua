-- chat.push: delivers a push (1011, 1015, 1019, 1021) to a user wherever the user is
-- connected: a session on this server directly, else the chat server named by uip_<uid>
-- through its ChatService (gRPC with a deadline), which delivers to its own session. An
-- offline user gets nothing: what matters is stored and read at the next login.
--
-- A peer's gRPC address is what it announces in its liveness key chatserver_<name>
-- ({host, port, rpc}), else chat.instances[name] of the config; a server without a
-- liveness key is dead and not called (no deadline spent on it). Looked up at most every
-- ADDRESS_TTL_MS per name.
--
-- Pushes for one peer server travel together: each process keeps one queue per peer, and
-- one task per peer sends what is queued as one ChatService.NotifyBatch call, one call in
-- flight per peer at a time. The first push to an idle peer waits
-- chat.push_batch_window_ms for company; the pushes that arrive while a call is in flight
-- go in the next one (at most chat.push_batch_max a call, group commit as in chat.batch).
-- One queue and one call at a time keep the order per (sender, receiver). A peer that
-- answers UNIMPLEMENTED (it only speaks the one-push RPCs: NotifyTextChatMsg,
-- NotifyAddFriend, NotifyAuthFriend) gets each push by its own RPC instead.
--
-- Where a receiver is (uip_<uid>) may be remembered for chat.location_cache_ms (0, the
-- default: not at all), so a stream of pushes to one user costs one Redis read per that
-- time, not one per push. A stale entry
-- is harmless: the server it names answers 1011 for the push, which then follows the user
-- once (read from Redis, not from here) and drops the entry; an entry naming a dead server
-- or this one is read again at once.
local host = require "host"
local keys = require "lib.keys"
local presence = require "chat.presence"
local settings = require "chat.settings"
local queue = require "lib.fifo"
local link = require "chat.link"

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
-- one) the config's; and its client port's host and port (the push link, chat.link). No
-- liveness key: the server is dead, nil.
local function lookup(name)
    local info, err = host.redis.call("GET", keys.chat_server(name))
    if err then return configured(name) end -- Redis trouble: the config is the best guess
    if not info then return nil end
    local d = host.json.safe.decode(info)
    if type(d) ~= "table" then return configured(name) end
    local h, port = type(d.host) == "string" and d.host or nil, tonumber(d.port)
    if type(d.rpc) == "string" then return d.rpc, h, port end
    return configured(name), h, port
end

local function known(name)
    local now = host.timer.monotonic()
    local hit = addresses[name]
    if hit and now - hit.at < ADDRESS_TTL_MS then return hit end
    local address, h, port = lookup(name)
    hit = { address = address, host = h, port = port, at = now }
    addresses[name] = hit
    return hit
end

-- address(name) -> "host:port" of chat server name's gRPC | nil (dead or unknown)
function M.address(name)
    return known(name).address
end

-- call(server, method, req, timeout_ms?) -> rsp | nil, err, code (gRPC status, if any)
function M.call(server, method, req, timeout_ms)
    local address = M.address(server)
    if not address then return nil, "chat server " .. tostring(server) .. " is not alive" end
    local rsp, err, code = host.grpc.call(address, method, req,
        { timeout_ms = timeout_ms or settings.rpc_timeout_ms })
    if not rsp then
        host.log.warn(method, " to ", server, " (", address, ") failed: ", tostring(err),
            " (", tostring(code), ")")
        return nil, err, code
    end
    return rsp
end

-- The receivers' servers: uid -> name and uid -> when read (host.timer.monotonic()), in two
-- generations swapped every LOCATION_MS, so what is kept is what was read in the last two
-- LOCATION_MS (no growth with the users ever pushed to). A module local: a reload starts
-- empty, which only costs a read per receiver.
local LOCATION_MS = settings.location_cache_ms
local loc = { at = -math.huge, cur = {}, cur_at = {}, old = {}, old_at = {} }

local function location_lookup(uid)
    host.metrics.inc("chathost_chat_push_location_reads_total", 1, nil,
        "uip_ reads by chat.push: pushes to users on other servers not answered by chat.location_cache_ms")
    return presence.where(uid)
end

-- The cached server of uid, if read less than LOCATION_MS ago: -> name | nil
local function cached(uid, now)
    local at = loc.cur_at[uid]
    if at and now - at < LOCATION_MS then return loc.cur[uid] end
    at = loc.old_at[uid]
    if at and now - at < LOCATION_MS then return loc.old[uid] end
    return nil
end

local function remember(uid, server, now)
    if LOCATION_MS <= 0 then return end
    if now - loc.at >= LOCATION_MS then
        loc.old, loc.old_at, loc.cur, loc.cur_at = loc.cur, loc.cur_at, {}, {}
        loc.at = now
    end
    loc.cur[uid], loc.cur_at[uid] = server, now
end

-- forget(uid): the next push to uid reads uip_ (its server said it is not there).
local function forget(uid)
    loc.cur_at[uid], loc.old_at[uid] = nil, nil
end

-- where(uid) -> the name of the server uid is on (maybe this one) | nil (offline) | nil, err:
-- from the cache when it names a live peer, else from uip_ (an offline user is not cached).
local function where(uid)
    local now = host.timer.monotonic()
    local server = LOCATION_MS > 0 and cached(uid, now)
    if server and server ~= settings.name and M.address(server) then return server end
    local err
    server, err = location_lookup(uid)
    if server then remember(uid, server, now) end
    return server, err
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

local BATCH = "ChatService.NotifyBatch"
local UNIMPLEMENTED = 12 -- gRPC status: the peer has no NotifyBatch
-- A call's items carry at most this many body bytes (a body is at most 64 KiB): the
-- message stays well within grpc.max_message_bytes.
local BATCH_BYTES = math.floor(host.config.grpc.max_message_bytes / 2)

local fifo, put, take, empty = queue.new, queue.put, queue.take, queue.empty

-- Per peer server name: { queue = fifo of items, task = the handle of the task sending
-- them, while one does, legacy_at = when the peer last answered UNIMPLEMENTED }. Kept by
-- the host: after a reload the new generation queues behind the pushes the old
-- generation's task is still sending, so one call per peer stays in flight.
-- An item: { uid, msg_id, body (JSON text), method, req (the one-push RPC and its request),
-- slot (the sender's, see below), followed (true once it went after its user) }.
local peers = host.keep("chat.push.peers.v1")

-- The sender's share, per (sending session, peer server): n = its pushes queued or in
-- flight there, waiters = its pushes waiting for room (fifo of { item, server, promise,
-- gone }). At most push_queue_max + 1 (one in flight, push_queue_max waiting), then the
-- sender waits: acks cannot run ahead of the pushes without bound.
local function slot(session, server)
    local slots = session.data.push_slots
    if not slots then
        slots = {}
        session.data.push_slots = slots
    end
    local s = slots[server]
    if not s then
        s = { n = 0, waiters = fifo() }
        slots[server] = s
    end
    return s
end

local function room(s) return s.n < settings.push_queue_max + 1 end

local send -- the peer task's body, below
local queue_item -- admission of a push, below post

-- The task's place while host.spawn runs it up to its first I/O.
local STARTING = { done = function() return false end }

local function enqueue(server, item)
    local peer = peers[server]
    if not peer then
        peer = { queue = fifo() }
        peers[server] = peer
    end
    put(peer.queue, item)
    if peer.task and not peer.task:done() then return end -- its task takes it
    peer.task = STARTING
    local handle = host.spawn(send, server, peer)
    if peer.task == STARTING then peer.task = handle end
end

-- A push of the sender's share s enters the queue of server.
local function admit(s, server, item)
    s.n = s.n + 1
    host.metrics.inc("chathost_chat_pushes_queued_total", 1, nil,
        "pushes that went through a push queue (chat.push_queue_max)")
    enqueue(server, item)
end

-- An item ended (sent, or given up): its sender's share has room for the next push, which
-- is queued at once even if its poster has gone meanwhile.
local function finish(item)
    host.metrics.inc("chathost_chat_pushes_queue_done_total", 1, nil,
        "pushes through a push queue that ended (sent or failed)")
    local s = item.slot
    s.n = s.n - 1
    while room(s) do
        local w = take(s.waiters)
        if not w then break end
        if not w.gone then
            admit(s, w.server, w.item)
            w.promise:resolve(true)
        end
    end
end

-- Items that did not reach their user at server (the call failed, or the user is not
-- connected there): each may have moved while it waited. A session here gets the push;
-- one on a third server gets it through that server's queue (once, no further chase).
-- -> the number given up
local function follow(server, items)
    local lost, where = 0, {} -- where: uid -> its server (false: none), looked up once
    for _, it in ipairs(items) do
        local fate = "lost"
        if not it.uids then forget(it.uid) end
        if it.uids then -- a group push (post_many): its members read what they missed
            fate = "lost"
        elseif send_here(it.uid, it.msg_id, it.body) then
            fate = "here"
        elseif not it.followed then
            local now = where[it.uid]
            if now == nil then
                now = location_lookup(it.uid) or false
                where[it.uid] = now
            end
            if now and now ~= server and now ~= settings.name and M.address(now) then
                it.followed, fate = true, "followed"
                enqueue(now, it) -- its sender's share stays taken until it ends there
            end
        end
        if fate == "lost" then lost = lost + 1 end
        if fate ~= "followed" then finish(it) end
    end
    return lost
end

-- Each item by its own RPC (a peer without NotifyBatch).
local function send_one_by_one(server, items)
    for _, it in ipairs(items) do
        local rsp = it.method and M.call(server, it.method, it.req) -- failures logged there
        if rsp and rsp.error == 0 then finish(it) else follow(server, { it }) end
    end
end

-- The end of a batch sent to server, by a call or the push link: delivered(i) says whether
-- item i reached its user there (those are done); the others follow their users. delivered
-- nil: the call or the link failed (why) before any answer, and what cannot follow is
-- given up, counted and logged.
local function conclude(server, items, delivered, why)
    local missed = {}
    for i, it in ipairs(items) do
        if delivered and delivered(i) then finish(it) else missed[#missed + 1] = it end
    end
    if #missed == 0 then return end
    local lost = follow(server, missed)
    if lost > 0 and not delivered then
        host.metrics.inc("chathost_chat_pushes_failed_total", lost, nil,
            "pushes given up: the call to the peer chat server failed, the user was nowhere else")
        host.log.warn("pushes to ", server, " given up: ", lost, " (", why,
            "; the messages are stored)")
    end
end

-- One call with items; -> nothing (every item is finished or queued elsewhere)
local function send_batch(server, peer, items)
    local now = host.timer.monotonic()
    if peer.legacy_at and now - peer.legacy_at < ADDRESS_TTL_MS then
        return send_one_by_one(server, items)
    end
    local req = {}
    for i, it in ipairs(items) do
        req[i] = { touid = it.uid, msg_id = it.msg_id, body = it.body, touids = it.uids }
    end
    host.metrics.inc("chathost_chat_push_batches_total", 1, nil,
        "NotifyBatch calls made (chat.push)")
    host.metrics.inc("chathost_chat_push_batch_items_total", #items, nil,
        "pushes carried by NotifyBatch calls (divided by the calls: pushes per call)")
    local rsp, err, code = M.call(server, BATCH, { items = req }) -- a failure is logged there
    if not rsp and code == UNIMPLEMENTED then
        peer.legacy_at = host.timer.monotonic()
        return send_one_by_one(server, items)
    end
    conclude(server, items, rsp and function(i) return rsp.error == 0 and rsp.errors[i] == 0 end,
        tostring(err))
end

-- The next call's items: the oldest, up to chat.push_batch_max and BATCH_BYTES of bodies.
local function next_items(q)
    local items, bytes = {}, 0
    while #items < settings.push_batch_max do
        local it = q[q.head]
        if not it or (#items > 0 and bytes + #it.body > BATCH_BYTES) then break end
        items[#items + 1] = take(q)
        bytes = bytes + #it.body
    end
    return items
end

-- A batch the push link carried is answered: missed = the indexes of the items the peer
-- delivered to nobody; nil when the link failed first (why).
local function settle_link(server, items, missed, why)
    local miss = {}
    for _, i in ipairs(missed or {}) do miss[i] = true end
    conclude(server, items, missed and function(i) return not miss[i] end,
        "push link: " .. tostring(why))
end

-- The next batch by the push link to server, if there is one: -> true (sent, or handed to
-- NotifyBatch) | false (no link: the caller calls)
local function send_linked(server, peer)
    local info = known(server)
    local l = link.get(server, info.host, info.port)
    if not l then return false end
    local items, body = link.take(l, peer.queue, settings.push_batch_max)
    if not body then link.drain(l) end -- one push too big for a frame: after the batches ahead
    if not body or not link.send(l, items, body, settle_link) then
        -- too big, or the link went down before it took them: by a call
        send_batch(server, peer, items)
    end
    return true
end

-- The peer's task: what was queued within the window, then whatever queued while the
-- batch before was on its way (answered, for a call), until nothing is left.
send = function(server, peer)
    if settings.push_batch_window_ms > 0 then host.timer.sleep(settings.push_batch_window_ms) end
    while not empty(peer.queue) do
        local linked, sent = pcall(send_linked, server, peer)
        if not linked then
            host.log.error("pushes to ", server, " (push link): ", tostring(sent))
        end
        if not (linked and sent) then
            local items = next_items(peer.queue)
            local ok, err = pcall(send_batch, server, peer, items)
            if not ok then
                host.log.error("pushes to ", server, ": ", tostring(err))
                for _, it in ipairs(items) do pcall(finish, it) end
            end
        end
    end
    peer.task = nil
end

-- How long a push waits for room: as long as the call ahead of it may take (an address
-- lookup and the call's deadline), and as long again, so a push is dropped only when its
-- sender's pushes have not moved for that long; but at most half the handler's own time
-- (chat.handler_timeout_ms), which would cut the handler off instead.
local function room_wait_ms()
    return math.min(2 * (settings.rpc_timeout_ms + host.config.redis.command_timeout_ms),
        math.floor(host.config.self.handler_timeout_ms / 2))
end

-- post(session, uid, msg_id, body, method, req): sends a push on behalf of the user of
-- session without holding up that session's next frames while a peer server answers. A
-- user on this server gets body at once. A user on another server is looked up (uip_, or
-- the location cache), then body goes into that server's queue, to travel with the other pushes for it in one
-- NotifyBatch (method and req: the one-push RPC, for a peer without NotifyBatch). Once
-- settings.push_queue_max + 1 pushes of this session wait for that server, post waits for
-- room (back-pressure: a sender cannot run ahead of its pushes without bound), at most
-- room_wait_ms; still no room: the push is dropped, logged and counted
-- (chathost_chat_pushes_dropped_total). What it announces is stored: the peer reads it at
-- its next page load. An offline user, or one whose server died, gets nothing.
function M.post(session, uid, msg_id, body, method, req)
    if send_here(uid, msg_id, body) then return end
    local server, err = where(uid)
    if err then return failed(msg_id, uid, err) end
    if not server or server == settings.name then return end -- offline
    if not M.address(server) then return end                 -- its server died with it
    if type(body) ~= "string" then body = host.json.encode(body) end
    local s = slot(session, server)
    return queue_item(session, server, s,
        { uid = uid, msg_id = msg_id, body = body, method = method, req = req, slot = s })
end

-- post_many(session, server, uids, msg_id, body): one push (body: JSON text) for several
-- users connected to the chat server named server (a group's members there: chat.fanout),
-- queued like post's as ONE item that carries the body once (PushItem.touids); the peer
-- sends it to each of them. Not chased when a user moved (they read it from history); a
-- peer without NotifyBatch does not get it.
function M.post_many(session, server, uids, msg_id, body)
    if not M.address(server) then return end
    local s = slot(session, server)
    return queue_item(session, server, s,
        { uid = uids[1], uids = uids, msg_id = msg_id, body = body, slot = s })
end

-- Admits item (of the sender's share s) to server's queue, waiting for room (see post).
queue_item = function(session, server, s, item)
    local msg_id, uid = item.msg_id, item.uid
    local waiters = s.waiters
    while not empty(waiters) and waiters[waiters.head].gone do take(waiters) end
    if room(s) and empty(waiters) then return admit(s, server, item) end
    local w = { item = item, server = server, promise = host.promise() }
    put(waiters, w)
    if w.promise:wait(room_wait_ms()) then return end
    w.gone = true -- finish skips it
    host.metrics.inc("chathost_chat_pushes_dropped_total", 1, nil,
        "pushes dropped: their push queue did not move (chat.push_queue_max, chat.push_timeout_ms)")
    host.log.warn(msg_id, " to uid ", uid, " dropped: the pushes of session ", session.id,
        " to ", server, " did not move in ", room_wait_ms(), " ms (chat.push_queue_max, ",
        settings.push_queue_max, ")")
end

return M

-- chat.link: the push link between two chat servers (docs/protocol.md §6.7). Pushes for a
-- peer's users travel as frames over one long-lived TCP connection to the peer's client
-- port instead of one ChatService.NotifyBatch call per batch: a batch is written as soon
-- as it is taken from the peer's queue, without waiting for the answer to the one before
-- (at most chat.push_link_window unanswered), and nothing passes through gRPC's threads on
-- either side. The peer answers each batch in order with the items it could not deliver.
--
-- Opening (the dialling side): 1201 {name} -> 1202 {error, name, nonce}; then 1203 {mac,
-- nonce = the dialler's} -> 1204 {error, max_body, mac}: each side proves it knows
-- grpc.secret by an HMAC-SHA-256 in hex, the dialler's of "chathost push link|" .. nonce
-- .. "|" .. dialler's name .. "|" .. peer's name, the peer's of "chathost push link
-- answer|" .. dialler's nonce .. "|" .. nonce .. "|" .. peer's name .. "|" .. dialler's
-- name: the secret never travels, a recorded opening is worth nothing (new nonces each
-- time), and pushes go only to a server that knows the secret. Without grpc.secret there are no links
-- (the client port is public: anyone could push), the pushes go by NotifyBatch. Then 1205
-- {items = [{u, m, b} | {us, m, b}]} -> 1206 {error, missed = [index, ...]} and 1207 -> 1208
-- while idle (the peer closes a connection silent for chat.heartbeat_timeout_ms).
--
-- The dialling side keeps one link per peer server (host.keep: a reload does not drop it;
-- a new generation retires the links it finds, waits for their batches to be answered,
-- then dials new ones; a link an old generation's dial opens after the reload is adopted). A link is dialled by a task of its own; until it is open the
-- pushes go by NotifyBatch. One that cannot be opened (refused, no answer, a peer that does
-- not speak it, a wrong secret) is not dialled again for RETRY_MS, twice as long after each
-- further failure up to RETRY_MAX_MS. A link that fails (closed, a write error, a batch not answered
-- within chat.push_timeout_ms) hands every unanswered batch back as failed: its pushes
-- follow their users once, as those of a failed call do (chat.push). With grpc.tls set the
-- links between roles are meant to be encrypted, and this one is plain TCP: not used.
local host = require "host"
local errors = require "lib.errors"
local queue = require "lib.fifo"
local settings = require "chat.settings"

local M = {}

M.HELLO, M.AUTH, M.PUSHES, M.PING = 1201, 1203, 1205, 1207

local RETRY_MS, RETRY_MAX_MS = 2000, 60000
local HEADROOM = 64 -- bytes of a batch's frame besides its items: '{"items":[...]}'
-- A link's frames may be this big (the frame format's limit), whatever chat.max_body_bytes
-- allows a client: fewer, bigger batches when the pushes queue up.
local LINK_MAX_BODY = 65535

local fifo, put, take, empty = queue.new, queue.put, queue.take, queue.empty
local encode, decode = host.json.encode, host.json.safe.decode
local inc = host.metrics.inc

local function secret() return host.config.grpc.secret or nil end

local function mac_of(nonce, dialler, peer)
    return host.crypto.hmac_sha256(secret(), "chathost push link|" .. nonce .. "|" .. dialler
        .. "|" .. peer)
end

-- The answering side's proof (1204), over the dialler's nonce and its own.
local function answer_mac_of(dnonce, nonce, peer, dialler)
    return host.crypto.hmac_sha256(secret(), "chathost push link answer|" .. dnonce .. "|"
        .. nonce .. "|" .. peer .. "|" .. dialler)
end

-- ---- the dialling side ------------------------------------------------------------------

-- Per peer server name, its link: { name, sock, open, pending = fifo of { items, settle,
-- at }, npending, room (promise while a sender waits for a free place in the window),
-- sending, turn (fifo of promises waiting to send), last_send, retired }
local links = host.keep("chat.link.links.v1")
for _, l in pairs(links) do l.retired = true end -- this generation dials its own
local failed = {} -- name -> { at, wait }: its link could not be opened at, not dialled
-- again for wait ms (module locals: after a reload the first push tries again)
-- name -> since when a task dials it; kept by the host, so that a new generation does not
-- dial a second link while the old one's dial is under way (it adopts that link instead)
local dialling = host.keep("chat.link.dialling.v1")

-- M.enabled() -> whether pushes may go by links at all
function M.enabled()
    local tls = host.config.grpc.tls
    return settings.push_link and secret() ~= nil and not (tls and (tls.cert_file or tls.ca_file))
end

local function wake(p)
    if p then p:resolve(true) end
end

-- One frame at a time on the socket (the batches and the pings of two tasks): the sender
-- owns l.sending and hands it to the next in turn.
local function send(l, id, body)
    if l.sending then
        local p = host.promise()
        put(l.turn, p)
        if not p:wait() or not l.open then return nil, "link closed" end
    else
        l.sending = true
    end
    local ok, err = nil, "link closed"
    if l.open then ok, err = l.sock:send_frame(id, body) end
    l.last_send = host.timer.monotonic()
    local nxt = take(l.turn)
    if nxt then nxt:resolve(true) else l.sending = false end
    return ok, err
end

-- The link is down: closed, forgotten, every unanswered batch settled as failed.
local function down(l, why)
    if not l.open then return end
    l.open = false
    if links[l.name] == l then links[l.name] = nil end
    l.sock:close()
    if l.npending == 0 and (l.retired or why == "closed") then
        -- nothing lost: a retired link, or a peer that closed an idle link (it stopped)
        host.log.info("push link to ", l.name, " closed (", tostring(why), ")")
    else
        host.log.warn("push link to ", l.name, " down: ", tostring(why), "; ", l.npending,
            " batch(es) unanswered follow their users")
        inc("chathost_chat_push_link_failures_total", 1, nil,
            "push links to peer chat servers that failed (closed, no answer in chat.push_timeout_ms)")
    end
    local batches = l.pending
    l.pending, l.npending = fifo(), 0
    wake(l.room)
    l.room = nil
    while true do
        local p = take(l.turn)
        if not p then break end
        p:resolve(false)
    end
    while true do
        local b = take(batches)
        if not b then break end
        local ok, err = pcall(b.settle, l.name, b.items, nil, why)
        if not ok then host.log.error("push link to ", l.name, ": ", tostring(err)) end
    end
end

-- The oldest batch of l is answered by body (1206).
local function answered(l, body)
    local b = take(l.pending)
    if not b then return down(l, "an answer to no batch") end
    l.npending = l.npending - 1
    local room = l.room
    l.room = nil
    wake(room)
    local r = decode(body)
    local missed = type(r) == "table" and r.error == errors.Success and type(r.missed) == "table"
        and r.missed
    local ok, err = pcall(b.settle, l.name, b.items, missed,
        not missed and ("answered " .. tostring(type(r) == "table" and r.error or body)) or nil)
    if not ok then host.log.error("push link to ", l.name, ": ", tostring(err)) end
end

local function ping_ms() return math.max(50, math.floor(settings.heartbeat_timeout_ms / 3)) end

-- The oldest batch of l has had no answer for chat.push_timeout_ms: l goes down. -> true then
local function overdue(l)
    local oldest = l.pending[l.pending.head]
    if not (oldest and host.timer.monotonic() - oldest.at > settings.rpc_timeout_ms) then
        return false
    end
    down(l, "no answer in " .. settings.rpc_timeout_ms .. " ms (chat.push_timeout_ms)")
    return true
end

-- The link's reader: answers in order, a ping while idle, the deadline of the oldest batch.
local function read_frames(l)
    local wait = math.min(settings.rpc_timeout_ms, ping_ms())
    while l.open do
        local id, body = l.sock:read_frame(wait)
        if not l.open then break end
        if id == M.PUSHES + 1 then
            answered(l, body)
        elseif id == M.PING + 1 then -- (alive)
        elseif id then
            down(l, "unexpected frame " .. id)
        elseif body ~= "timeout" then
            down(l, body)
        end
        if not l.open or overdue(l) or l.sending then -- (nothing more to do this turn)
        elseif l.retired and l.npending == 0 then
            down(l, "retired") -- (an info line: nothing lost)
        elseif l.npending == 0 and host.timer.monotonic() - l.last_send >= ping_ms() then
            local ok, err = send(l, M.PING, "{}")
            if not ok then down(l, err) end
        end
    end
end

-- The reader's task: an error in it takes the link down (its batches settled), never
-- leaves a link open that nobody reads.
local function read_loop(l)
    local ok, err = pcall(read_frames, l)
    if not ok then
        host.log.error("push link to ", l.name, ": reader: ", tostring(err))
        down(l, "reader: " .. tostring(err))
    end
end

-- The first answer of an opening, checked -> table | nil, why
local function opening_answer(sock, want)
    local id, body = sock:read_frame(settings.rpc_timeout_ms)
    if not id then return nil, body end
    if id ~= want then return nil, "answered frame " .. id .. " (a peer without push links?)" end
    local r = decode(body)
    if type(r) ~= "table" then return nil, "answered no JSON object" end
    if r.error ~= errors.Success then return nil, "answered error " .. tostring(r.error) end
    return r
end

-- Dials name at host:port and opens the link -> link | nil, why
local function dial(name, h, port)
    local sock, err = host.tcp.connect(h, port, { timeout_ms = settings.rpc_timeout_ms })
    if not sock then return nil, err end
    local ok, r
    ok, err = sock:send_frame(M.HELLO, encode { name = settings.name })
    if ok then r, err = opening_answer(sock, M.HELLO + 1) end
    if r and r.name ~= name then r, err = nil, "the server there is " .. tostring(r.name) end
    if r and type(r.nonce) ~= "string" then r, err = nil, "no nonce" end
    if r then
        local nonce, dnonce = r.nonce, host.crypto.random_hex(16)
        ok, err = sock:send_frame(M.AUTH, encode { mac = mac_of(nonce, settings.name, name),
            nonce = dnonce })
        r = nil
        if ok then r, err = opening_answer(sock, M.AUTH + 1) end
        -- and the peer's proof: pushes go only to a server that knows the secret too
        if r and (type(r.mac) ~= "string" or not host.crypto.constant_time_equal(r.mac,
                answer_mac_of(dnonce, nonce, name, settings.name))) then
            r, err = nil, "wrong proof of grpc.secret in its 1204"
        end
    end
    if not r then
        sock:close()
        return nil, err
    end
    -- the frames it takes (a peer's answer: at least chat.max_body_bytes, at most the format's)
    local max_body = math.max(settings.max_body_bytes,
        math.min(LINK_MAX_BODY, math.floor(tonumber(r.max_body) or 0)))
    return { name = name, sock = sock, open = true, pending = fifo(), npending = 0,
        turn = fifo(), sending = false, last_send = host.timer.monotonic(), max_body = max_body }
end

-- Dials name and, once the link is open, makes it the one pushes take (in a task of its
-- own: the pushes go by NotifyBatch meanwhile, so a peer that is slow to answer the
-- opening holds none up). A failed opening waits RETRY_MS before the next, twice as long
-- after each further failure, at most RETRY_MAX_MS (a peer from before the link never
-- answers 1201).
local function open(name, h, port)
    local ok, l, err = pcall(dial, name, h, port)
    if not ok then l, err = nil, l end
    dialling[name] = nil
    if not l then
        local f = failed[name]
        local wait = f and math.min(2 * f.wait, RETRY_MAX_MS) or RETRY_MS
        failed[name] = { at = host.timer.monotonic(), wait = wait }
        host.log.warn("push link to ", name, " (", h, ":", port, ") not opened: ", tostring(err),
            "; pushes go by NotifyBatch for ", wait, " ms")
        inc("chathost_chat_push_link_failures_total", 1, nil,
            "push links to peer chat servers that failed (closed, no answer in chat.push_timeout_ms)")
        return
    end
    failed[name] = nil
    local old = links[name]
    links[name] = l
    if old and old.open then
        old.retired = true -- its reader closes it once its batches are answered
        if old.npending == 0 and not old.sending then down(old, "replaced") end
    end
    inc("chathost_chat_push_link_opened_total", 1, nil, "push links opened to peer chat servers")
    host.log.info("push link to ", name, " (", h, ":", port, ") open")
    host.spawn(read_loop, l)
end

-- M.get(name, h, port) -> the open link to peer server name | nil (use NotifyBatch; one is
-- dialled at h:port meanwhile unless an opening failed lately)
function M.get(name, h, port)
    local l = links[name]
    if l and l.open and not l.retired then return l end
    if l and l.open and l.npending > 0 then
        -- a retired link's batches are answered before anything else goes to that peer
        M.drain(l)
        l = links[name]
        if l and l.open and not l.retired then return l end
    end
    if not M.enabled() or not h or not port then return nil end
    local since = dialling[name] -- (a dial ends within its three waits; one that did not was lost)
    if since and host.timer.monotonic() - since < 3 * settings.rpc_timeout_ms + 1000 then
        return nil
    end
    local f = failed[name]
    if f and host.timer.monotonic() - f.at < f.wait then return nil end
    dialling[name] = host.timer.monotonic()
    host.spawn(open, name, h, port)
    return nil
end

-- Waits for the next answer on l (or l down), at most chat.push_timeout_ms at a time; an
-- oldest batch unanswered for longer takes the link down here too (the reader checks the
-- same, this bounds the wait even without it).
local function await_answer(l)
    if not l.room then l.room = host.promise() end
    if not l.room:wait(settings.rpc_timeout_ms) then overdue(l) end
end

-- M.drain(l): waits until every batch l carries is answered (or l is down): what goes by
-- NotifyBatch or another link next cannot overtake them
function M.drain(l)
    while l.open and l.npending > 0 do await_answer(l) end
end

-- The JSON of one queued push (it: {uid, msg_id, body, uids?}).
local function item_json(it)
    if it.uids then
        return '{"us":[' .. table.concat(it.uids, ",") .. '],"m":' .. it.msg_id .. ',"b":'
            .. encode(it.body) .. "}"
    end
    return '{"u":' .. string.format("%d", it.uid) .. ',"m":' .. it.msg_id .. ',"b":'
        .. encode(it.body) .. "}"
end

-- M.take(l, q, max_items) -> items, body | item, nil: the oldest pushes of q that fit one
-- frame of link l (the limit its peer gave, 1204's max_body), at most max_items; or, when
-- the oldest alone does not fit, that one (for NotifyBatch).
function M.take(l, q, max_items)
    local limit = l.max_body - HEADROOM
    local parts, items, bytes = {}, {}, 0
    while #items < max_items do
        local it = q[q.head]
        if not it then break end
        local j = it.link_json or item_json(it)
        it.link_json = j
        if bytes + #j + 1 > limit then
            if #items == 0 then return { take(q) }, nil end
            break
        end
        take(q)
        items[#items + 1], parts[#parts + 1] = it, j
        bytes = bytes + #j + 1
    end
    return items, '{"items":[' .. table.concat(parts, ",") .. "]}"
end

-- M.send(l, items, body, settle) -> true (the link took the batch: settle(name, items,
-- missed | nil, why) runs once it is answered, or failed) | nil (the link was down: the
-- caller keeps the items). Waits while chat.push_link_window batches are unanswered.
function M.send(l, items, body, settle)
    while l.open and l.npending >= settings.push_link_window do await_answer(l) end
    if not l.open then return nil end
    put(l.pending, { items = items, settle = settle, at = host.timer.monotonic() })
    l.npending = l.npending + 1
    -- from here the batch is the link's: whatever happens, down() or an answer settles it
    local fine, ok, err = pcall(send, l, M.PUSHES, body)
    if not fine then ok, err = nil, ok end
    if not ok then down(l, "write: " .. tostring(err)) end
    inc("chathost_chat_push_link_batches_total", 1, nil, "batches of pushes sent over push links")
    inc("chathost_chat_push_link_items_total", #items, nil,
        "pushes carried over push links (divided by the batches: pushes per batch)")
    return true
end

-- ---- the answering side -----------------------------------------------------------------

-- 1201 {name}: a peer server opens a link -> 1202 {error, name, nonce}
function M.hello(session, body)
    if session.uid or session.data.link_peer then
        return { error = errors.InvalidParams, field = "msg_id" } -- a user's session is no link
    end
    local name = body.name
    if type(name) ~= "string" or name == "" or #name > 64 then
        return { error = errors.InvalidParams, field = "name" }
    end
    if not secret() then -- no proof possible: the pushes go by NotifyBatch
        return { error = errors.PermissionDenied, field = "grpc.secret" }
    end
    local nonce = host.crypto.random_hex(16)
    session.data.link_hello = { name = name, nonce = nonce }
    return { error = errors.Success, name = settings.name, nonce = nonce }
end

-- 1203 {mac}: the proof -> 1204 {error}; a wrong one is answered 1015 and closed
function M.auth(session, body)
    local h = session.data.link_hello
    session.data.link_hello = nil
    if not h then return { error = errors.InvalidParams, field = "msg_id" } end
    local mac = body.mac
    if not secret() or type(mac) ~= "string"
        or not host.crypto.constant_time_equal(mac, mac_of(h.nonce, h.name, settings.name)) then
        host.log.warn("push link from ", session.peer, " calling itself ", h.name,
            ": wrong proof of grpc.secret, closed")
        session:send(M.AUTH + 1, { error = errors.PermissionDenied })
        session:close("push link not authenticated")
        return nil
    end
    local dnonce = body.nonce
    if type(dnonce) ~= "string" or #dnonce < 16 or #dnonce > 128 then
        return { error = errors.InvalidParams, field = "nonce" }
    end
    session.data.link_peer = h.name
    local max_body = session:keep_open(LINK_MAX_BODY)
    host.log.info("push link from ", h.name, " (", session.peer, ") open")
    return { error = errors.Success, max_body = max_body,
        mac = answer_mac_of(dnonce, h.nonce, settings.name, h.name) }
end

local function linked(session)
    return session.data.link_peer ~= nil
end

-- 1207: the link is alive -> 1208
function M.ping(session)
    if not linked(session) then return { error = errors.PermissionDenied } end
    return { error = errors.Success }
end

-- M.pushes(deliver, deliver_each, is_push) -> the 1205 handler: each item's body to its
-- user's session here (each of us's); the answer names the items that reached nobody (the
-- user is not here, or not a push), which the sender then follows.
function M.pushes(deliver, deliver_each, is_push)
    return function(session, body)
        if not linked(session) then return { error = errors.PermissionDenied } end
        local items = body.items
        if type(items) ~= "table" then return { error = errors.InvalidParams, field = "items" } end
        local missed = {}
        for i, it in ipairs(items) do
            local code = errors.InvalidParams
            if type(it) == "table" and is_push(it.m) and type(it.b) == "string" then
                if type(it.us) == "table" and #it.us > 0 then
                    code = deliver_each(it.us, it.m, it.b)
                elseif type(it.u) == "number" then
                    code = deliver(it.u, it.m, it.b)
                end
            else
                host.log.warn("push link from ", session.data.link_peer, ": item ", i,
                    " is not a push")
            end
            if code ~= errors.Success then missed[#missed + 1] = i end
        end
        return { error = errors.Success, missed = missed }
    end
end

return M

-- helpers.chat_cluster: a status role and chat servers as real processes for the chat
-- specs, each chat server under a name of its own (so specs never see each other's
-- liveness keys), plus quick users (rows written straight into MySQL, tokens written the
-- way the status role writes them) and logged-in chat clients.
local host = require "host"
local roles = require "helpers.roles"
local util = require "helpers.util"
local chat_client = require "helpers.chat_client"
local http = require "helpers.http"
local redis, db = host.redis, host.db

local M = {}

M.by_port = {} -- the chat servers start_chat started, by their port (for diagnostics)
M.__index = M

-- Chat settings of the spec clusters: short intervals so expiry is observable quickly.
M.CHAT = {
    alive_ttl_s = 2, report_interval_ms = 200, presence_ttl_s = 30, lock_wait_ms = 500,
    heartbeat_timeout_ms = 60000, send_queue_frames = 200, kick_timeout_ms = 500,
}

local function merged(base, extra)
    local out = {}
    for k, v in pairs(base) do out[k] = v end
    for k, v in pairs(extra or {}) do out[k] = v end
    return out
end

-- start_status() -> role
function M.start_status()
    return roles.start { role = "status", config = function(port)
        return { status = { port = port, admin_port = 0, servers_refresh_ms = 0 } }
    end }
end

-- start_chat{name=?, chat=? (settings over M.CHAT), config=? (other top-level sections,
-- e.g. grpc), copy_scripts=?, edit=?, env=?, redis=? (a host.redis client: the Redis the
-- server announces itself in, when env points it at another one), ws=? (a WebSocket
-- listener too)} -> role with .name, .rpc_port, .admin_port and .ws_port (with ws)
function M.start_chat(opts)
    opts = opts or {}
    local name = opts.name or ("cs" .. host.crypto.random_hex(4))
    local rpc_port, admin_port, ws_port
    local role = roles.start { role = "chat", name = name, copy_scripts = opts.copy_scripts,
        edit = opts.edit, env = opts.env, config = function(port)
            rpc_port, admin_port = roles.free_port(), roles.free_port()
            ws_port = opts.ws and roles.free_port() or nil
            local chat = merged(M.CHAT, opts.chat)
            chat.instances = { [name] = { port = port, rpc_port = rpc_port,
                admin_port = admin_port, ws_port = ws_port } }
            local cfg = merged({}, opts.config)
            cfg.chat = chat
            return cfg
        end }
    role.name, role.rpc_port, role.admin_port, role.ws_port = name, rpc_port, admin_port, ws_port
    M.by_port[role.port] = role
    -- announced (start() reports at once): the status role may choose it
    local call = opts.redis and function(...) return opts.redis:call(...) end or redis.call
    assert(util.wait_until(function() return call("EXISTS", "chatserver_" .. name) == 1 end,
        3000, "chat server " .. name .. " to announce itself"))
    return role
end

-- start{chats=2, chat=?, config=?, copy_scripts=?, edit=?, ws=?} -> cluster {status=, chats=}
-- (chat, config, copy_scripts, edit and ws as for start_chat, for every chat server)
function M.start(opts)
    opts = opts or {}
    redis.call("DEL", "chatservers") -- names other specs announced
    local self = setmetatable({ chats = {} }, M)
    self.status = M.start_status()
    for i = 1, opts.chats or 2 do
        self.chats[i] = M.start_chat { chat = opts.chat, config = opts.config,
            copy_scripts = opts.copy_scripts, edit = opts.edit, ws = opts.ws }
    end
    return self
end

-- An edit for start/start_chat{copy_scripts=true, edit=...}: the chat scripts' on_close
-- logs "spec: on_close done session=<id>" once it has returned (not when it raised), so a
-- spec can await the end of a session's cleanup (M.closed_line) instead of sleeping.
function M.trace_on_close(dir)
    util.edit_file(dir .. "/chat/init.lua", "\nreturn M%s*$", [[

do -- added by tests/helpers/chat_cluster.lua (trace_on_close)
    local on_close = M.on_close
    M.on_close = function(session, reason)
        on_close(session, reason)
        host.log.info("spec: on_close done session=", session.id)
    end
end
return M
]])
end

-- The log line of trace_on_close for session id sid (awaited with role:await).
function M.closed_line(sid)
    return "spec: on_close done session=" .. sid .. "\n"
end

function M:stop()
    for _, c in ipairs(self.chats) do c:stop() end
    self.status:stop()
end

local seq = 0

-- user{nick=?, icon=?, desc=?} -> {uid, name, email, token}: a user row and a chat token
function M.user(fields)
    fields = fields or {}
    seq = seq + 1
    local tag = host.crypto.random_hex(4)
    local u = { name = ("cu%d_%s"):format(seq, tag),
        email = ("cu%d.%s@example.com"):format(seq, tag),
        nick = fields.nick or ("nick" .. seq), icon = fields.icon or ":/res/head_1.jpg",
        desc = fields.desc or "", sex = fields.sex or 0 }
    local res = assert(db.exec(
        "INSERT INTO user (name, email, pwd_hash, nick, icon, `desc`, sex)"
            .. " VALUES (?, ?, ?, ?, ?, ?, ?)",
        u.name, u.email, "$argon2id$not-a-real-hash", u.nick, u.icon, u.desc, u.sex))
    u.uid = res.insert_id
    M.token(u)
    return u
end

-- token(user) -> a fresh chat login token for user (what the status role issues at each
-- gate login: a chat login uses its token up), also kept as user.token
function M.token(user)
    user.token = host.crypto.random_hex(16)
    assert(redis.call("SET", "utoken_" .. user.uid, user.token, "EX", 3600))
    return user.token
end

-- login(port, user) -> client, the 1006 body (asserted error 0), with a fresh token
function M.login(port, user)
    M.token(user)
    local c, err = chat_client.connect(port)
    if not c then -- (seen under heavy load only: say who holds the port, if anyone)
        local ss = host.proc.run({ "ss", "-ltnpH", "sport = :" .. port })
        local role = M.by_port[port]
        error(("connect to chat port %d: %s; listening there: %s; its server: %s"):format(port,
            tostring(err), ss and ss.stdout ~= "" and ss.stdout or "nobody",
            role and ((role.proc.exited and "exited" or ("running (pid " .. role.proc.pid .. ")"))
                .. ", its log:\n" .. role:log()) or "not started by this helper"), 2)
    end
    local r = assert(c:request(1005, { uid = user.uid, token = user.token }))
    assert(r.error == 0, "login of " .. user.uid .. " answered " .. host.json.encode(r))
    return c, r
end

-- befriend(a, b, {thread=false}?) -> thread_id: both friend rows and the pair's thread,
-- straight in MySQL (the chat role's own accept path has specs of its own)
function M.befriend(a, b, opts)
    local u1, u2 = math.min(a.uid, b.uid), math.max(a.uid, b.uid)
    assert(db.exec("INSERT INTO friend (self_id, friend_id, back) VALUES (?, ?, ''), (?, ?, '')",
        a.uid, b.uid, b.uid, a.uid))
    if opts and opts.thread == false then return nil end
    local t = assert(db.exec("INSERT INTO chat_thread (type) VALUES ('private')"))
    assert(db.exec("INSERT INTO private_chat (thread_id, user1_id, user2_id) VALUES (?, ?, ?)",
        t.insert_id, u1, u2))
    return t.insert_id
end

-- text(from, to, thread, content) -> a 1017 body: one text from user from to user to
function M.text(from, to, thread, content)
    return { fromuid = from.uid, touid = to.uid, thread_id = thread,
        text_array = { { content = content, unique_id = "{" .. content .. "}" } } }
end

-- pair(from_port, to_port) -> a, b, thread, ca, cb: friends a logged in on from_port (client
-- ca) and b on to_port (client cb)
function M.pair(from_port, to_port)
    local a, b = M.user(), M.user()
    local thread = M.befriend(a, b)
    return a, b, thread, M.login(from_port, a), M.login(to_port, b)
end

-- said(ca, got, a, b, thread, content): a's text to b is acked (client ca) and pushed to the
-- client got
function M.said(ca, got, a, b, thread, content)
    local ack = assert(ca:request(1017, M.text(a, b, thread, content)))
    assert(ack.error == 0, "text " .. content .. " answered " .. host.json.encode(ack))
    local push = assert(got:wait_push(1019, 5000))
    assert(push.chat_datas[1].content == content,
        "expected the push of " .. content .. ", got " .. host.json.encode(push))
end

-- stopper(role) -> s: s.stop() stops the role's process (SIGSTOP), s.resume() lets it go
-- on (SIGCONT) when it was stopped and does nothing otherwise (for after_each, teardown)
function M.stopper(role)
    local s = { stopped = false }
    function s.stop()
        assert(role.proc:kill("STOP"))
        s.stopped = true
    end
    function s.resume()
        if s.stopped then
            assert(role.proc:kill("CONT"))
            s.stopped = false
        end
    end
    return s
end

-- settled(role, timeout_ms): every push role queued for a peer has ended (answered, or
-- given up: its counts are in)
function M.settled(role, timeout_ms)
    assert(util.wait_until(function()
        return M.metric(role, "chathost_chat_pushes_queue_done_total", 0)
            == M.metric(role, "chathost_chat_pushes_queued_total", 0)
    end, timeout_ms, role.name .. "'s pushes to end"))
end

-- metric(role, name, absent?, labels?) -> the value of a series without labels in the
-- role's /metrics; with labels ({method = "...", ...}), the sum of the series of name whose
-- labels include those (each label="value" as written). A missing series raises (fails the
-- test), so a renamed metric is noticed, unless absent is given: then it is returned (for
-- a counter read before its first increment, which the host does not list yet).
function M.metric(role, name, absent, labels)
    local res = assert(http.get(role.admin_port, "/metrics"))
    local v
    if labels then
        for set, value in res.body:gmatch("\n" .. name:gsub("%p", "%%%0") .. "{([^}]*)} (%S+)") do
            local all = true
            for k, want in pairs(labels) do
                if not (("," .. set .. ","):find("," .. k .. '="' .. want .. '",', 1, true)) then
                    all = false
                end
            end
            if all then v = (v or 0) + tonumber(value) end
        end
    else
        v = tonumber(res.body:match("\n" .. name .. " ([%d%.e%+]+)"))
    end
    if v then return v end
    if absent ~= nil then return absent end
    error(("no series %q in /metrics of %s"):format(name, role.name or "?"), 2)
end

-- fake_peer(name, handlers) -> a gRPC server in this process (its handle), announced in
-- Redis as the chat server name (for pushes to a peer that answers as a spec wants)
function M.fake_peer(name, handlers)
    local server = assert(host.grpc.serve { address = "127.0.0.1:0", handlers = handlers })
    assert(redis.call("SET", "chatserver_" .. name, host.json.encode {
        host = "127.0.0.1", port = 1, rpc = "127.0.0.1:" .. server.port }, "EX", 600))
    return server
end

-- The number of rows of a COUNT(*) AS n query.
function M.count(sql, ...)
    return assert(db.query(sql, ...))[1].n
end

return M

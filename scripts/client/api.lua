-- client.api: the client as a Lua object, what the terminal UI and the specs drive. Account
-- calls go to the gate through the HTTP manager (client.http_mgr); after a login, one chat
-- connection (client.chat_conn) carries requests (client.requests), heartbeats and pushes.
-- Pushes become events (client.events). A lost chat connection is re-established by
-- logging in again through the gate with the credentials kept in this object (memory
-- only); a kick by a login elsewhere ends the session with no automatic login.
--
-- Every call returns its result, or nil, a sentence for a person, and a code: the server's
-- error code (a number), or "invalid" (a field check failed before anything was sent),
-- "network", "http", "reply", "offline", "kicked", "closed".
local host = require "host"
local password = require "lib.password"
local friends = require "lib.friends"
local settings = require "client.settings"
local checks = require "client.checks"
local sentences = require "client.sentences"
local backoff = require "client.backoff"
local http_mgr = require "client.http_mgr"
local chat_conn = require "client.chat_conn"
local events = require "client.events"
local pushes = require "client.pushes"
local requests = require "client.requests"
local group_requests = require "client.groups"
local images = require "client.images"
local msgids = require "lib.msgids"
local errors = require "lib.errors"

local ReqId, Modules = http_mgr.ReqId, http_mgr.Modules

local M = {}

local Client = {}
Client.__index = Client
M.Client = Client
for name, fn in pairs(requests.methods) do Client[name] = fn end -- search, add, send, ...
for name, fn in pairs(group_requests.methods) do Client[name] = fn end -- groups, mark_read
for name, fn in pairs(images.methods) do Client[name] = fn end -- send_image, save_image, ...

local function invalid(msg) return nil, msg, "invalid" end

-- new{gate=url?, ca_file=?, on_event=fn(ev)?, heartbeat_ms=?, ...settings overrides} -> client
function M.new(opts)
    opts = opts or {}
    local cfg = {}
    for k, v in pairs(settings) do cfg[k] = v end
    for k, v in pairs(opts) do cfg[k] = v end
    local self = setmetatable({ cfg = cfg, state = "offline", stop = host.promise(),
        friend_by_uid = {}, request_by_uid = {}, names = {}, threads = {}, unread = {},
        groups = {}, images = {} }, Client)
    self.events = events.new { on_event = opts.on_event, max = cfg.events_max }
    self.http = http_mgr.new { gate = opts.gate or cfg.gate_url, ca_file = cfg.ca_file,
        timeout_ms = cfg.http_timeout_ms,
        attempts = cfg.retry_attempts, retry_min_ms = cfg.retry_min_ms,
        retry_max_ms = cfg.retry_max_ms, sleep = function(ms) return self:sleep(ms) end }
    return self
end

-- A backoff pause that close() cuts short: -> false when the client is closing.
function Client:sleep(ms) return not self.stop:wait(ms) end

function Client:retry_opts(attempts)
    return { attempts = attempts or self.cfg.retry_attempts, min_ms = self.cfg.retry_min_ms,
        max_ms = self.cfg.retry_max_ms, sleep = function(ms) return self:sleep(ms) end }
end

-- ---- accounts (gate) ------------------------------------------------------------------

-- get_code(email, module?) -> {email} | nil, sentence, code
function Client:get_code(email, module)
    local ok, msg = checks.get_code(email)
    if not ok then return invalid(msg) end
    return self.http:post(ReqId.GET_VARIFY_CODE, module or Modules.REGISTER,
        { email = checks.trim(email) })
end

-- The original picks one of its five bundled avatars at random.
local function random_icon()
    return (":/res/head_%d.jpg"):format(1 + host.crypto.random_uniform(5))
end

-- register{user, email, password, confirm?, code} -> {uid, user, email} | nil, sentence, code
function Client:register(f)
    local ok, msg = checks.register(f)
    if not ok then return invalid(msg) end
    local confirm = f.confirm == nil and f.password or f.confirm
    return self.http:post(ReqId.REG_USER, Modules.REGISTER, { user = f.user,
        email = checks.trim(f.email), passwd = password.xor(f.password),
        confirm = password.xor(confirm), varifycode = checks.trim(f.code), sex = 0,
        icon = random_icon(), nick = f.user })
end

-- reset{user, email, password, code} -> {user, email} | nil, sentence, code
function Client:reset(f)
    local ok, msg = checks.reset(f)
    if not ok then return invalid(msg) end
    return self.http:post(ReqId.RESET_PWD, Modules.RESET, { user = checks.trim(f.user),
        email = checks.trim(f.email), passwd = password.xor(f.password),
        varifycode = checks.trim(f.code) })
end

-- ---- the chat session -----------------------------------------------------------------
-- (the requests made in a session, search to history, are in client.requests)

-- Keeps what the 1006 reply says about the user, the friends and the applications.
function Client:load_session(reply)
    self.me = { uid = reply.uid, name = reply.name, nick = reply.nick, icon = reply.icon,
        sex = reply.sex, desc = reply.desc, email = reply.email }
    self.names[reply.uid] = reply.name
    self.friend_by_uid, self.request_by_uid = {}, {}
    for _, f in ipairs(type(reply.friend_list) == "table" and reply.friend_list or {}) do
        self:add_friend(f)
    end
    for _, a in ipairs(type(reply.apply_list) == "table" and reply.apply_list or {}) do
        if a.status ~= friends.ACCEPTED and not self.friend_by_uid[a.uid] then
            self:add_request { uid = a.uid, name = a.name, nick = a.nick, greeting = a.desc }
        end
    end
end

function Client:add_friend(f)
    if type(f.uid) ~= "number" then return end
    self.friend_by_uid[f.uid] = { uid = f.uid, name = f.name, nick = f.nick, desc = f.desc,
        back = f.back, icon = f.icon, sex = f.sex }
    self.names[f.uid] = f.name
    self.request_by_uid[f.uid] = nil
end

function Client:add_request(a)
    if type(a.uid) ~= "number" then return end
    self.request_by_uid[a.uid] = a
    self.names[a.uid] = a.name
end

-- One login through the gate and the chat server: -> session | nil, sentence, code,
-- retryable. Does not touch self.conn: the caller installs the session.
function Client:open_session(email, clear)
    local gate, err, code = self.http:post(ReqId.LOGIN_USER, Modules.LOGIN,
        { email = checks.trim(email), passwd = password.xor(clear) })
    if not gate then return nil, err, code, false end
    local where = ("chat server at %s:%d"):format(gate.host, gate.port)
    local conn, cerr
    conn, cerr = chat_conn.open { host = gate.host, port = gate.port,
        timeout_ms = self.cfg.connect_timeout_ms, tls = gate.tls, ca_file = self.cfg.ca_file,
        on_push = function(id, body) self:on_push(conn, id, body) end,
        on_lost = function(why) self:on_lost(conn, why) end }
    if not conn then -- a TLS failure, unless a slow handshake, does not go away by retrying
        local again = not tostring(cerr):find("^tls: ") or cerr == "tls: handshake timed out"
        return nil, sentences.network(where, cerr), "network", again
    end
    local reply, rerr = conn:request(msgids.LOGIN, { uid = gate.uid, token = gate.token },
        self.cfg.request_timeout_ms)
    if not reply or reply.error ~= 0 then
        conn:close()
        if not reply then return nil, sentences.network(where, rerr), "network", true end
        return nil, sentences.of(reply.error, reply), reply.error,
            reply.error == errors.ServerBusy or reply.error == errors.TokenInvalid
    end
    return { conn = conn, reply = reply, server = ("%s:%d"):format(gate.host, gate.port),
        gate = gate }
end

-- Installs a session opened by open_session: heartbeats start, state is online, and the
-- resource connection opens (images; when it cannot, chat goes on and self.res_error says
-- why).
function Client:install(session)
    self.conn = session.conn
    self.server = session.server
    self:load_session(session.reply)
    self.state = "online"
    session.conn:start_heartbeat(self.me.uid, self.cfg.heartbeat_ms)
    self.res_token = session.gate.token -- the resource channel's identity (§13.2)
    self:close_resource()
    self:resource_at(session.gate)
    self:open_resource()
end

-- login(email, password) -> profile {uid, name, nick, email, ...} | nil, sentence, code
function Client:login(email, clear)
    local ok, msg = checks.login { email = email, password = clear }
    if not ok then return invalid(msg) end
    if self.state == "closed" then return self:offline() end
    self:drop_session("offline")
    local session, err, code = backoff.run(self:retry_opts(), function()
        return self:open_session(email, clear)
    end)
    if not session then return nil, err, code end
    if self.state == "closed" then
        session.conn:close()
        return self:offline()
    end
    self.credentials = { email = email, password = clear }
    self:install(session)
    return self.me
end

-- Ends the chat connection (if any) and sets the state; credentials are forgotten unless
-- the state is "reconnecting".
function Client:drop_session(state)
    local conn = self.conn
    self.conn = nil
    self.state = state
    if state ~= "reconnecting" then self.credentials = nil end
    if conn then conn:close() end
    self:close_resource()
end

function Client:logout() self:drop_session("offline") end

-- A push from the current connection: applications, acceptances, messages, kicks.
function Client:on_push(conn, id, body)
    if conn ~= self.conn then return end
    if id == msgids.NOTIFY_KICKED then
        self:drop_session("kicked")
        self:wake_waiters()
        self.events:emit { kind = "kicked", message = sentences.KICKED }
        return
    end
    for _, ev in ipairs(pushes.events(self, id, body)) do self.events:emit(ev) end
end

-- The current connection ended by itself: log in again through the gate, with backoff,
-- a bounded number of times; then "reconnected", or "offline" with the reason.
function Client:on_lost(conn, why)
    if conn ~= self.conn or self.state ~= "online" then return end
    self:drop_session("reconnecting")
    self.reconnected = host.promise()
    self.events:emit { kind = "disconnected", reason = tostring(why), message = sentences.LOST }
    self.reconnector = host.spawn(function() self:reconnect() end)
end

local RECONNECT_RETRY = { network = true, http = true, reply = true, [errors.RPCFailed] = true,
    [errors.TokenInvalid] = true, [errors.ServerBusy] = true, [errors.Internal] = true }

function Client:reconnect()
    local creds = self.credentials
    local session, err, code = backoff.run(self:retry_opts(self.cfg.reconnect_attempts),
        function()
            if self.state ~= "reconnecting" then return nil, "stopped", "closed" end
            local s, e, c = self:open_session(creds.email, creds.password)
            return s, e, c, RECONNECT_RETRY[c] or false
        end)
    if self.state ~= "reconnecting" then -- closed or logged out meanwhile
        if session then session.conn:close() end
    elseif session then
        self:install(session)
        self.events:emit { kind = "reconnected", server = self.server }
    else
        self:drop_session("offline")
        self.events:emit { kind = "offline", reason = err, code = code,
            message = sentences.LOST .. ": " .. tostring(err) }
    end
    self:wake_waiters()
end

function Client:wake_waiters()
    if self.reconnected then self.reconnected:resolve() end
end

-- Why there is no connection, as a failure.
function Client:offline()
    if self.state == "kicked" then return nil, sentences.KICKED, "kicked" end
    if self.state == "closed" then return nil, sentences.CLOSED, "closed" end
    if self.state == "reconnecting" then
        return nil, sentences.LOST .. "; logging in again", "network"
    end
    return nil, sentences.NOT_LOGGED_IN, "offline"
end

-- One request on the chat connection, waiting for a reconnection in progress first:
-- -> reply | nil, sentence, code, retryable
function Client:request_once(id, body, idempotent)
    if not self.conn and self.state == "reconnecting" then
        self.reconnected:wait(self.cfg.request_timeout_ms)
    end
    local conn = self.conn
    if not conn then return self:offline() end
    local reply, err = conn:request(id, body, self.cfg.request_timeout_ms)
    if not reply then
        if err == "timeout" then
            return nil, "The chat server did not answer in time", "network", false
        end
        return nil, sentences.LOST, "network", idempotent
    end
    if reply.error ~= 0 then
        return nil, sentences.of(reply.error, reply), reply.error, reply.error == errors.ServerBusy
    end
    return reply
end

-- chat_request(id, body, idempotent) -> reply | nil, sentence, code. A busy server (1018)
-- is asked again; a lost connection only for requests that may be sent twice.
function Client:chat_request(id, body, idempotent)
    return backoff.run(self:retry_opts(), function()
        return self:request_once(id, body, idempotent)
    end)
end

-- next_event(timeout_ms) -> event | nil, "timeout" (when no on_event callback was given)
function Client:next_event(timeout_ms) return self.events:next(timeout_ms) end

-- close(): ends the session and every task of the client; it cannot be used again.
function Client:close()
    if self.state == "closed" then return end
    self:drop_session("closed")
    self.stop:resolve(true)
    self:wake_waiters()
    if self.reconnector then self.reconnector:wait(5000) end
end

return M

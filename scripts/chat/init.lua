-- The chat role's business logic (docs/protocol.md §5-6). The host's TCP server decodes
-- frames and calls messages[msg_id](session, body) in a coroutine, one frame of a session
-- at a time; a returned table is sent as the reply (msg_id + 1). Every message but 1005
-- needs a logged-in session (1014), whose uid is the only identity a request has.
-- on_close cleans up presence, start/stop announce and withdraw the server, and the
-- ChatService handlers take pushes from the other chat servers.
local host = require "host"
local current = require "lib.current"
local errors = require "lib.errors"
local request = require "chat.request"
local presence = require "chat.presence"
local load = require "chat.load"
local login = require "chat.login"
local search = require "chat.search"
local friends = require "chat.friends"
local text = require "chat.text"
local image = require "chat.image"
local threads = require "chat.threads"
local rpc = require "chat.rpc"
local link = require "chat.link"
local settings = require "chat.settings"
local groups = require "chat.groups"
local members = require "chat.members"
local msgids = require "lib.msgids"
local tokens = require "lib.tokens"
local redis_scripts = require "lib.redis_scripts"

local M = {}

-- (A handler that raises is logged by the host and answered 1019.)
local function logged_in(handler)
    return function(session, body)
        if not session.uid then return { error = errors.NotLoggedIn } end
        return handler(session, body)
    end
end

local HEARTBEAT_FIELDS = { { name = "fromuid", kind = "uid", self = true } }

-- 1023 {fromuid} -> 1024: keeps the presence keys and the resource session token alive.
-- When they belong to a newer login (whose kick did not reach this server), this session
-- is the one left over: 1021, closed.
local function heartbeat(session, body)
    local f, bad = request.read(session, body, HEARTBEAT_FIELDS)
    if not f then return bad end
    local fresh, err = presence.refresh(session.uid, session.id)
    if fresh == nil then
        host.log.warn("heartbeat of uid ", session.uid, ": ", tostring(err))
    elseif not fresh then
        host.log.info("uid ", session.uid, " logged in elsewhere: closing session ", session.id)
        session.data.kicked = true
        session:send(msgids.NOTIFY_KICKED, { error = errors.Success, uid = session.uid })
        session:close("kicked")
        return nil
    end
    local token = session.data.restoken -- (none: logged in before a reload brought it)
    local kept, terr = true, nil
    if token then kept, terr = tokens.session_refresh(session.uid, token, settings.presence_ttl_s) end
    if not kept then
        host.log.warn("heartbeat of uid ", session.uid, ": resource session token: ",
            tostring(terr or "a newer login's"))
    end
    return { error = errors.Success }
end

M.messages = {
    [msgids.LOGIN] = login,
    -- a peer chat server's push link (chat.link): no user's session
    [msgids.LINK_HELLO] = link.hello,
    [msgids.LINK_AUTH] = link.auth,
    [msgids.LINK_PUSHES] = rpc.link_pushes,
    [msgids.LINK_PING] = link.ping,
    [msgids.SEARCH_USER] = logged_in(search),
    [msgids.ADD_FRIEND] = logged_in(friends.apply),
    [msgids.AUTH_FRIEND] = logged_in(friends.accept),
    [msgids.TEXT_CHAT] = logged_in(text.handle),
    [msgids.HEARTBEAT] = logged_in(heartbeat),
    [msgids.LOAD_THREADS] = logged_in(threads.list),
    [msgids.CREATE_PRIVATE_CHAT] = logged_in(threads.create),
    [msgids.LOAD_MESSAGES] = logged_in(threads.messages),
    [msgids.IMAGE_CHAT] = logged_in(image.announce),
    [msgids.IMAGE_URL] = logged_in(image.url),
    [msgids.CREATE_GROUP] = logged_in(groups.create),
    [msgids.INVITE_GROUP] = logged_in(groups.invite),
    [msgids.GROUP_TEXT] = logged_in(groups.text),
    [msgids.LEAVE_GROUP] = logged_in(groups.leave),
    [msgids.REMOVE_MEMBER] = logged_in(groups.remove),
    [msgids.SET_ROLE] = logged_in(groups.set_role),
    [msgids.TRANSFER_GROUP] = logged_in(groups.transfer),
    [msgids.UPDATE_GROUP] = logged_in(groups.update),
    [msgids.GROUP_MEMBERS] = logged_in(groups.members),
    [msgids.MY_GROUPS] = logged_in(groups.mine),
    [msgids.MARK_READ] = logged_in(threads.mark_read),
}

-- After the connection is gone (closed by either side, idle, kicked): the presence keys and
-- the resource session token go unless a newer login owns them (a kick: the new login's
-- session_open replaced the token). A login this session had in flight counts too.
function M.on_close(session, reason)
    local uid = session.uid or session.data.login_uid
    if not uid or session.data.kicked or session.data.cleaned then return end
    local removed, err = presence.cleanup(uid, session.id)
    if removed == nil then
        host.log.warn("cleanup of uid ", uid, " (", tostring(reason), "): ", tostring(err))
    end
    local token = session.data.restoken
    if token then
        local closed, cerr = tokens.session_close(uid, token)
        if not closed then
            host.log.warn("resource session token of uid ", uid, " (", tostring(reason), "): ",
                tostring(cerr))
        end
    end
end

-- The bound sessions that hold a resource session token.
local function with_token(sessions)
    local out = {}
    for _, s in ipairs(sessions) do
        if s.data.restoken then out[#out + 1] = s end
    end
    return out
end

-- The timer calls the current generation's report_load, so an edited chat.load is used
-- from its next tick.
-- A liveness key that was gone means Redis may have lost every key of this server (an
-- outage longer than alive_ttl_s, a restart, a flush): the sessions' presence is written
-- again too.
function M.report_load()
    local ok, err, db_err = load.report()
    if db_err then
        host.log.warn("MySQL does not answer (", db_err, "): announced as db_down, status ",
            "sends no logins here")
    end
    if not ok then
        host.log.warn("load report: ", tostring(err))
    elseif err and host.sessions.count().bound > 0 then
        host.log.warn("liveness key was gone from Redis: announcing every session again")
        M.reannounce()
    end
end

-- Presence and resource session token of every session here, written again where they
-- vanished (see chat.presence, lib.tokens.session_refresh).
function M.reannounce()
    local sessions = host.sessions.list()
    local ok, err = presence.reannounce(sessions)
    if not ok then host.log.warn("presence after Redis came back: ", tostring(err)) end
    local kept, kerr = redis_scripts.pipeline_each(with_token(sessions), function(s)
        return tokens.session_refresh_cmd(s.uid, s.data.restoken, settings.presence_ttl_s)
    end)
    if not kept then host.log.warn("resource session tokens after Redis came back: ", tostring(kerr)) end
end

-- Redis is back after an outage (host.redis.on_reconnect), maybe restarted empty: load,
-- liveness and presence are written at once, so pushes and logins do not wait for the
-- next report and heartbeats.
function M.redis_reconnected()
    members.clear() -- group versions may be gone
    local ok, err = load.report()
    if not ok then host.log.warn("load report: ", tostring(err)) end
    M.reannounce()
end

-- The server reached chat.max_connections (full = true: it refuses new connections) or
-- has room again: the status role hears it now, not at the next report.
function M.on_capacity(full)
    M.report_load()
    if full then
        host.log.warn("chat.max_connections reached: refusing new connections, status told")
    else
        host.log.info("room for connections again: status told")
    end
end


function M.start()
    M.report_load()
    host.timer.every(settings.report_interval_ms, current("report_load"))
    host.redis.on_reconnect(current("redis_reconnected"))
    host.log.info("chat server ", tostring(settings.name), " announced (rpc ",
        settings.rpc_address, ")")
end

-- Graceful shutdown: withdraw from the status role's choice first, then drop the presence
-- and resource session token of every session here (on_close then has nothing left to do).
function M.stop()
    local ok, err = load.withdraw()
    if not ok then host.log.warn("withdraw: ", tostring(err)) end
    local sessions = host.sessions.list()
    for _, s in ipairs(sessions) do s.data.cleaned = true end
    local removed, rerr = presence.remove_all(sessions)
    if not removed then host.log.warn("presence at stop: ", tostring(rerr)) end
    local closed, cerr = redis_scripts.pipeline_each(with_token(sessions), function(s)
        return tokens.session_close_cmd(s.uid, s.data.restoken)
    end)
    if not closed then host.log.warn("resource session tokens at stop: ", tostring(cerr)) end
end

-- the ChatService handlers ("Service.Method"), not the module's other fields
for name, fn in pairs(rpc) do
    if name:find(".", 1, true) then M[name] = fn end
end

return M

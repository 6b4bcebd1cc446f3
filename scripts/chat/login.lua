-- 1005 login -> 1006 (docs/protocol.md §6). The token must equal utoken_<uid> (issued by
-- the status role; valid on every chat server, once: the login that succeeds uses it up,
-- under the user's lock, so two logins with one token cannot both succeed; an unused token
-- expires after status.token_ttl_s). Then, holding lock:lock_<uid>, the last
-- login wins: the user's session on another server is kicked through that server's
-- ChatService.NotifyKickUser, presence is written, the session is bound, and an older
-- session on this server gets 1021 and is closed. No lock in time: 1018, nothing bound; a
-- store failing in the reads before it (token, user, lists): 1018 too, nothing used up.
-- At most chat.login_concurrency logins are in progress at once; the others wait their turn
-- (up to chat.login_wait_ms, then 1018): a storm of thousands of logins is served at the
-- rate Redis and MariaDB answer instead of queueing all of them at once for the pools and
-- the lock, where most would run out of time and get 1018.
-- Pushes that reach the session once it is bound wait for this reply (session:bind holds
-- them in the host), so the client hears of its login before anything else.
-- The reply carries the user's own profile (e-mail included, never the password hash),
-- the applications to the user and the friends, cut to fit one frame.
local host = require "host"
local errors = require "lib.errors"
local keys = require "lib.keys"
local lock = require "lib.lock"
local tokens = require "lib.tokens"
local users = require "lib.users"
local friends = require "lib.friends"
local request = require "chat.request"
local presence = require "chat.presence"
local push = require "chat.push"
local fit = require "chat.fit"
local reply = require "chat.reply"
local settings = require "chat.settings"
local msgids = require "lib.msgids"
local admission = require "lib.admission"

local MSG = msgids.LOGIN

local FIELDS = {
    { name = "uid", kind = "uid", required = true },
    { name = "token", kind = "string" },
}

-- Kicks the user's session on another chat server; a server that does not answer in time
-- is dead or stuck: the login goes on and overwrites its presence.
local function kick_remote(server, uid)
    local rsp = push.call(server, "ChatService.NotifyKickUser", { uid = uid },
        settings.kick_timeout_ms)
    host.log.info("login uid=", uid, ": kicked on ", server, ": ",
        rsp and tostring(rsp.error) or "no answer")
end

local function kick_local(old, uid)
    old.data.kicked = true -- its keys are the new login's now: no cleanup on close
    old:send(msgids.NOTIFY_KICKED, { error = errors.Success, uid = uid })
    old:close("kicked")
    host.log.info("login uid=", uid, ": kicked session ", old.id, " on this server")
end

local TOKEN_USED = "token used"

-- The steps after the token was used up: -> true | nil, err. The token becomes the
-- resource session token (lib.tokens.session_open, with the presence TTL), replacing an
-- older session's: the resource role accepts it while this session lives.
local function bind_presence(session, uid, token)
    local server, err = presence.where(uid)
    if err then return nil, err end
    if server and server ~= settings.name then kick_remote(server, uid) end
    local ok, serr = presence.set(uid, session.id)
    if not ok then return nil, serr end
    local value = tokens.session_value(token, session.peer)
    session.data.restoken = value -- on_close closes it, whatever happens next
    local opened, oerr = tokens.session_open(uid, value, settings.presence_ttl_s)
    if not opened then return nil, oerr end
    -- Closed meanwhile: its on_close (which takes no lock) may have run before the keys
    -- were written, so they are removed here; the comparing removal leaves a newer
    -- login's keys alone, and an on_close running after this finds nothing left.
    if session.closed then
        local removed, rerr = presence.remove(uid, session.id)
        if removed == nil then
            host.log.warn("login uid=", uid, ": presence of closed session ", session.id,
                " not removed: ", tostring(rerr))
        end
        local closed, cerr = tokens.session_close(uid, value)
        if not closed then
            host.log.warn("login uid=", uid, ": resource session token of closed session ",
                session.id, " not removed: ", tostring(cerr))
        end
        return nil, "closed"
    end
    local bound, old = session:bind(uid) -- (no yield since the check: it is open)
    if not bound then return nil, old end
    if old and old ~= session then kick_local(old, uid) end
    return true
end

-- Runs holding the user's lock: -> true | nil, err (TOKEN_USED: another login took it).
-- The token is used up first (two logins with one token cannot both kick and bind), and
-- given back when a later step fails: that login is answered 1018 or 1019, and a retry
-- with the same token must be able to succeed.
local function bind_locked(session, uid, token)
    if session.closed then return nil, "closed" end
    local left, terr = tokens.consume(uid, token)
    if left == nil then return nil, terr end
    if not left then return nil, TOKEN_USED end
    local ok, err = bind_presence(session, uid, token)
    if not ok and err ~= "closed" then
        local restored, rerr = tokens.restore(uid, token, left)
        if not restored then
            host.log.warn("login uid=", uid, ": token not given back: ", tostring(rerr))
        end
    end
    return ok, err
end

-- bind(session, uid, token) -> true | nil, reply
local function bind(session, uid, token)
    local locked, bound, err = lock.with(keys.lock(uid), settings.lock_ttl_ms,
        settings.lock_wait_ms, bind_locked, session, uid, token)
    if not locked then -- bound is why: "timeout" (answered 1018 as "busy") or a Redis error
        return nil, reply.failed(MSG, "lock of uid " .. uid, bound == "timeout" and "busy" or bound)
    end
    if err == TOKEN_USED then return nil, { error = errors.TokenInvalid } end
    if not bound then return nil, reply.failed(MSG, "bind of uid " .. uid, err) end
    return true
end

-- A read before anything of the login happened failed (Redis or MySQL down, timed out,
-- a connection lost): 1018 whatever the error, as retrying cannot do harm.
local function read_failed(what, err)
    return reply.failed(MSG, what .. " (" .. tostring(err) .. ")", "busy")
end

-- The reply: profile, then applications (at most a quarter of the room) and friends, each
-- cut to what fits and marked "<list>_more" when cut.
local function login_reply(user, token)
    local rsp = { error = errors.Success, uid = user.uid, name = user.name, nick = user.nick,
        icon = user.icon, sex = user.sex, desc = user.desc, email = user.email, token = token,
        apply_list = host.json.array {}, friend_list = host.json.array {} }
    local applies, err = friends.applications(user.uid, settings.apply_list_max)
    if not applies then return read_failed("apply list", err) end
    local list, ferr = friends.list(user.uid, settings.friend_list_max + 1)
    if not list then return read_failed("friend list", ferr) end
    local room = fit.budget(rsp)
    local n, used = fit.count(applies, math.floor(room / 4))
    rsp.apply_list = fit.head(applies, n)
    if n < #applies then rsp.apply_list_more = true end
    local m = fit.count(list, room - used)
    if m > settings.friend_list_max then m = settings.friend_list_max end
    rsp.friend_list = fit.head(list, m)
    if m < #list then rsp.friend_list_more = true end
    if rsp.apply_list_more or rsp.friend_list_more then
        host.log.warn("1006 of uid ", user.uid, " cut to one frame: ", n, " of ", #applies,
            " applications, ", m, " of ", #list, " friends (more marked)")
    end
    return rsp
end

local function login(session, f)
    if session.closed then return { error = errors.ServerBusy } end -- left while it waited
    local uid = f.uid
    if session.uid and session.uid ~= uid then
        return { error = errors.PermissionDenied, field = "uid" }
    end
    local valid, terr = tokens.valid(uid, f.token)
    if valid == nil then return read_failed("token check", terr) end
    if not valid then return { error = errors.TokenInvalid } end
    local user, uerr = users.by_uid(uid)
    if uerr then return read_failed("user", uerr) end
    if not user then return { error = errors.UidInvalid } end
    local rsp = login_reply(user, f.token) -- before binding: a failure here binds nothing
    if rsp.error ~= errors.Success then return rsp end
    session.data.login_uid = uid -- on_close cleans up after a login it interrupted
    local ok, failed = bind(session, uid, f.token)
    if not ok then return failed end
    host.log.info("login uid=", uid, " session=", session.id, " peer=", tostring(session.peer))
    return rsp
end

-- A slot not released within the handler deadline belonged to a cancelled handler.
local turns = admission.kept("chat.login.turns.v1", settings.login_concurrency,
    settings.handler_timeout_ms,
    function(waiting)
        host.metrics.set("chathost_chat_logins_waiting", waiting, nil,
            "1005 logins waiting for their turn (chat.login_concurrency are in progress)")
    end)

return function(session, body)
    local f, bad = request.read(session, body, FIELDS)
    if not f then return bad end
    local slot = turns:acquire(settings.login_wait_ms)
    if not slot then return reply.failed(MSG, "turn to log in", "busy") end
    local ok, rsp = pcall(login, session, f)
    turns:release(slot)
    if not ok then error(rsp, 0) end
    return rsp
end

-- POST /user_login {email, passwd}: checks the password against the argon2id hash and asks
-- the status role for a chat server and a token. Errors in the order of
-- docs/protocol.md §3: 1001; 1016; 1017; 1018 (waited login_wait_ms for logins in
-- flight); 1009; 1002.
--
-- Failures, not attempts, are limited (lib.ratelimit's failure budgets): per (e-mail,
-- client IP) and per client IP, login_email_ip_limit and login_ip_limit failures per
-- login_window_s, then 1017 until the window ends. A login is admitted only while the
-- failures plus the logins in flight stay below both limits, otherwise it waits (up to
-- login_wait_ms) for those in flight to end: a burst of guesses gets no more checks than
-- the limit, and a burst of correct logins from one address (a NAT, a reconnect storm) all
-- get through. The failures of an e-mail from any address only slow it down: from the
-- login_email_limit-th on, the e-mail is refused for login_email_backoff_s, doubling with
-- each further failure up to login_email_backoff_max_s, so nobody can lock its owner out.
-- A success forgets the failures of its (e-mail, IP) and the e-mail's backoff. An unknown
-- e-mail is checked against a dummy hash with the same cost, so it answers 1009 no faster
-- than a wrong password.
local host = require "host"
local errors = require "lib.errors"
local keys = require "lib.keys"
local validate = require "lib.validate"
local password = require "lib.password"
local ratelimit = require "lib.ratelimit"
local users = require "lib.users"
local request = require "gate.request"
local reply = require "gate.reply"
local rpc = require "gate.rpc"
local settings = require "gate.settings"

local ROUTE = "user_login"

local FIELDS = {
    { name = "email", kind = "string", required = true, check = validate.email },
    { name = "passwd", kind = "string", required = true },
}

-- A hash of a random password with the default cost (crypto.argon2_* in config).
local DUMMY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$EqMOJXacyAu97IYeAxW1mQ$"
    .. "1FxH+MDy9JS+9i0Pn4JYUHL+2NV+3dVrUm4m83TmYTg"
local dummy_hash

-- A hash with the configured cost (made once per generation when the cost is not the
-- default), so a miss costs what a wrong password costs.
local function dummy()
    if dummy_hash then return dummy_hash end
    if not host.crypto.needs_rehash(DUMMY_HASH) then
        dummy_hash = DUMMY_HASH
    else
        dummy_hash = host.crypto.hash_password(host.crypto.random_hex(16))
    end
    return dummy_hash or DUMMY_HASH
end

-- check(email, obfuscated) -> user | false | nil, err
local function check(email, obfuscated)
    local user, err = users.by_email(email)
    if err then return nil, err end
    local clear = password.clear(obfuscated)
    if not clear then return false end -- fails the policy: cannot be anyone's password
    local ok, verr = host.crypto.verify_password(user and user.pwd_hash or dummy(), clear)
    if ok == nil then return nil, verr end
    return ok and user or false, clear
end

-- Re-hashes a password made with other argon2 costs, unless it changed meanwhile.
local function rehash(user, clear)
    if not settings.rehash_on_login or not host.crypto.needs_rehash(user.pwd_hash) then return end
    local hash, err = host.crypto.hash_password(clear)
    if hash then
        local _, uerr = users.set_password(user.uid, hash, user.pwd_hash)
        err = uerr
    end
    if err then host.log.warn(ROUTE, ": re-hash of uid ", user.uid, " failed: ", tostring(err)) end
end

-- The two failure budgets of a login from ip for email.
local function budgets(email, ip)
    local pair = keys.email_ip(email, ip)
    return {
        { key = keys.rate("login_email_ip", pair),
            pending = keys.rate("login_email_ip_inflight", pair),
            limit = settings.login_email_ip_limit, window = settings.login_window_s },
        { key = keys.rate("login_ip", ip), pending = keys.rate("login_ip_inflight", ip),
            limit = settings.login_ip_limit, window = settings.login_window_s },
    }
end

-- A login waiting for those in flight asks again this often: about the time a password
-- check takes, so a waiter is admitted soon after one ends without flooding Redis.
local WAIT_STEP_MS = 20

-- admit(bs, id) -> "admitted" | "refused", retry_after | "busy" (waited login_wait_ms in
-- vain) | nil, err. The lease outlives the handler (gate.handler_timeout_ms cancels it).
local function admit(bs, id)
    local lease = host.config.gate.handler_timeout_ms + 1000
    local deadline = host.timer.monotonic() + settings.login_wait_ms
    while true do
        local verdict, retry_after = ratelimit.admit(bs, id, lease)
        if verdict ~= "wait" then return verdict, retry_after end
        if host.timer.monotonic() >= deadline then return "busy" end
        host.timer.sleep(WAIT_STEP_MS)
    end
end

-- The WebSocket URL of a chat server's addresses (docs/protocol.md §5.5), or nil when it
-- has no WebSocket port: the reply then has exactly the fields the original clients know.
local function wsurl(a)
    if not a.ws_port or a.ws_port == "" then return nil end
    local h = a.host
    if h:find(":", 1, true) then h = "[" .. h .. "]" end
    return ("%s://%s:%s/"):format(a.scheme, h, a.ws_port)
end

-- The addresses a login reply names: the chosen chat server's and the resource server's
-- own, or for a login that came through the TLS proxy the proxy's (docs/protocol.md §5.6:
-- TLS ports, wss, and tls = true saying so), so a plain client on a plain path keeps its
-- plain addresses.
local function addresses(req, server)
    local own = { host = server.host, port = server.port, ws_port = server.ws_port,
        scheme = "ws", reshost = settings.reshost, resport = settings.resport }
    local p = settings.proxy
    if not p or not request.via_tls_proxy(req) then return own end
    local c = p.chats[server.host .. ":" .. server.port]
    if not c then -- a server this gate's config does not list: its own address is all there is
        host.log.warn(ROUTE, ": chat server ", server.host, ":", server.port, " is not in ",
            "chat.instances here: its plain address goes to a client of the TLS proxy")
        return own
    end
    return { host = p.host, port = c.port, ws_port = c.ws_port, scheme = "wss",
        reshost = p.host, resport = p.resport, tls = true }
end

local function rate_limited(req, email, retry_after, what)
    return reply.done(ROUTE, req, { error = errors.RateLimited, retry_after = retry_after },
        what, email)
end

return function(req)
    local f, bad = request.read(req, FIELDS)
    if not f then return reply.done(ROUTE, req, bad, "refused") end
    local email = f.email:lower()
    local backoff = keys.rate("login_backoff", email)

    local wait, werr = ratelimit.blocked(backoff)
    if wait == nil then return reply.failed(ROUTE, req, "rate check", werr, email) end
    if wait then return rate_limited(req, email, wait, "e-mail backing off") end

    local bs = budgets(email, request.peer(req))
    local id = host.crypto.random_hex(8)
    local verdict, retry_after = admit(bs, id)
    if verdict == nil then return reply.failed(ROUTE, req, "rate count", retry_after, email) end
    if verdict == "busy" then return reply.failed(ROUTE, req, "waiting", "busy", email) end
    if verdict == "refused" then return rate_limited(req, email, retry_after, "rate limited") end

    local user, clear = check(email, f.passwd)
    if user == nil then -- not the user's fault: do not count it
        ratelimit.release(bs, id)
        return reply.failed(ROUTE, req, "password check", clear, email)
    end
    if not user then
        local _, err = ratelimit.failed(bs, id)
        if not err then
            _, err = ratelimit.backoff { key = keys.rate("login_email", email), marker = backoff,
                window = settings.login_window_s, after = settings.login_email_limit,
                first_ms = settings.login_email_backoff_s * 1000,
                max_ms = settings.login_email_backoff_max_s * 1000 }
        end
        if err then host.log.warn(ROUTE, ": failure count failed: ", tostring(err)) end
        return reply.done(ROUTE, req, { error = errors.PasswdInvalid }, "wrong credentials", email)
    end
    ratelimit.release(bs, id)
    ratelimit.clear(bs[1].key)
    ratelimit.clear(keys.rate("login_email", email))
    ratelimit.clear(backoff)
    rehash(user, clear)

    local server = rpc.get_chat_server(user.uid)
    if not server or server.error ~= errors.Success then
        return reply.done(ROUTE, req, { error = errors.RPCFailed },
            server and "status answered " .. tostring(server.error) or "status unreachable", email)
    end
    local a = addresses(req, server)
    return reply.done(ROUTE, req, { error = errors.Success, uid = user.uid, email = user.email,
        token = server.token, host = a.host, port = a.port, chathost = a.host, chatport = a.port,
        reshost = a.reshost, resport = a.resport, wsurl = wsurl(a), tls = a.tls },
        "logged in uid=" .. user.uid, email)
end

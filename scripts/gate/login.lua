-- POST /user_login {email, passwd}: checks the password against the argon2id hash and asks
-- the status role for a chat server and a token. Errors in the order of
-- shared/PROTOCOL.md §3: 1001; 1016; 1017; 1009; 1002.
--
-- Failures are limited per e-mail and per client IP. Each attempt is counted before the
-- password is checked (atomically with the limit check), so a burst of parallel guesses
-- gets no more checks than the limit; a success then clears the e-mail's counter and
-- gives back its count on the IP's. An unknown e-mail is checked against a dummy hash with
-- the same cost, so it answers 1009 no faster than a wrong password.
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

return function(req)
    local f, bad = request.read(req, FIELDS)
    if not f then return reply.done(ROUTE, req, bad, "refused") end
    local email = f.email:lower()
    local by_email = keys.rate("login_email", email)
    local by_ip = keys.rate("login_ip", request.peer(req))

    local ok, retry_after = ratelimit.take {
        { key = by_email, limit = settings.login_email_limit, window = settings.login_window_s },
        { key = by_ip, limit = settings.login_ip_limit, window = settings.login_window_s },
    }
    if ok == nil then return reply.failed(ROUTE, req, "rate count", retry_after, email) end
    if not ok then
        return reply.done(ROUTE, req, { error = errors.RateLimited, retry_after = retry_after },
            "rate limited", email)
    end

    local user, clear = check(email, f.passwd)
    if user == nil then -- not the user's fault: do not count it
        ratelimit.give_back(by_email)
        ratelimit.give_back(by_ip)
        return reply.failed(ROUTE, req, "password check", clear, email)
    end
    if not user then
        return reply.done(ROUTE, req, { error = errors.PasswdInvalid }, "wrong credentials", email)
    end
    ratelimit.clear(by_email)
    ratelimit.give_back(by_ip)
    rehash(user, clear)

    local server = rpc.get_chat_server(user.uid)
    if not server or server.error ~= errors.Success then
        return reply.done(ROUTE, req, { error = errors.RPCFailed },
            server and "status answered " .. tostring(server.error) or "status unreachable", email)
    end
    return reply.done(ROUTE, req, { error = errors.Success, uid = user.uid, email = user.email,
        token = server.token, host = server.host, port = server.port,
        chathost = server.host, chatport = server.port }, "logged in uid=" .. user.uid, email)
end

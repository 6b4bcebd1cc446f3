-- POST /reset_pwd {user, email, passwd, varifycode}: sets a new password for the account
-- whose e-mail received the code. Errors in the order of docs/protocol.md §3: 1001;
-- 1016; 1003; 1004; 1007; 1017 (hash_ip_limit; 1003 after it: code_max_hashes); 1008.
--
-- The code is consumed (compare-and-delete) after the checks and before the update, so one
-- code changes the password once even when requests race; the new hash is made before
-- that, so a full hashing queue (1018) leaves the code usable. Each hash counts against the
-- client IP and the code, as for registration.
local host = require "host"
local errors = require "lib.errors"
local keys = require "lib.keys"
local validate = require "lib.validate"
local password = require "lib.password"
local ratelimit = require "lib.ratelimit"
local users = require "lib.users"
local request = require "gate.request"
local reply = require "gate.reply"
local codes = require "gate.codes"

local ROUTE = "reset_pwd"

-- Any name an account may have (the name policy may have been looser once).
local function name_ok(s) return validate.text(s, 64) end

local FIELDS = {
    { name = "user", kind = "string", required = true, check = name_ok },
    { name = "email", kind = "string", required = true, check = validate.email },
    { name = "passwd", kind = "string", required = true, check = password.clear },
    { name = "varifycode", kind = "string", required = true, check = codes.well_formed },
}

return function(req)
    local f, bad = request.read(req, FIELDS)
    if not f then return reply.done(ROUTE, req, bad, "refused") end
    local email = f.email:lower()

    local refused = codes.verify(ROUTE, req, email, f.varifycode)
    if refused then return refused end

    local user, uerr = users.by_name(f.user)
    if uerr then return reply.failed(ROUTE, req, "lookup", uerr, email) end
    if not user or user.email:lower() ~= email then
        return reply.done(ROUTE, req, { error = errors.EmailNotMatch }, "name and e-mail differ",
            email)
    end

    refused = codes.may_hash(ROUTE, req, email, f.varifycode)
    if refused then return refused end
    local hash, herr = host.crypto.hash_password(password.clear(f.passwd))
    if not hash then return reply.failed(ROUTE, req, "hashing", herr, email) end
    local consumed, cerr = codes.consume(email, f.varifycode)
    if consumed == nil then return reply.failed(ROUTE, req, "code consume", cerr, email) end
    if not consumed then -- a concurrent request used it first
        return reply.done(ROUTE, req, { error = errors.VarifyExpired }, "code used meanwhile",
            email)
    end

    local updated, perr = users.set_password(user.uid, hash)
    if not updated then
        host.log.warn(ROUTE, ": update of uid ", user.uid, " failed: ", tostring(perr or "no row"))
        return reply.done(ROUTE, req, { error = errors.PasswdUpFailed }, "update failed", email)
    end
    -- the owner of the address proved it: forget the e-mail's failed logins (its backoff)
    -- and those from this client IP (the lock-out of this address for the e-mail)
    ratelimit.clear(keys.rate("login_email", email))
    ratelimit.clear(keys.rate("login_backoff", email))
    ratelimit.clear(keys.rate("login_email_ip", keys.email_ip(email, request.peer(req))))
    return reply.done(ROUTE, req, { error = errors.Success, user = user.name, email = email },
        "password reset uid=" .. user.uid, email)
end

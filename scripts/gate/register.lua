-- POST /user_register {user, email, passwd, confirm, varifycode, nick?, icon?, sex?}.
-- Errors in the order of docs/protocol.md §3: 1001; 1016; 1006; 1003; 1004; 1005;
-- 1017 (and 1003, 1005 again after it: a code used up, a race lost at the insert).
--
-- The code is checked (wrong guesses counted) before the insert and consumed after it.
-- Consuming it first would cost the user their code when the name turns out to be taken;
-- checking it and consuming later is still safe under concurrency, because a code belongs
-- to one e-mail and the UNIQUE e-mail key lets only one insert for it succeed: two
-- requests racing with the same code create one account, the other gets 1005.
-- Hashing is what costs: a name or e-mail already taken answers 1005 before it, and each
-- hash counts against the client IP (hash_ip_limit) and the code (code_max_hashes).
local host = require "host"
local errors = require "lib.errors"
local validate = require "lib.validate"
local password = require "lib.password"
local users = require "lib.users"
local request = require "gate.request"
local reply = require "gate.reply"
local codes = require "gate.codes"

local ROUTE = "user_register"

local function nick_ok(s) return validate.text(s, 64) end
local function icon_ok(s) return validate.text(s, 255) end
local function sex_ok(v) return v == 0 or v == 1 or v == 2 end

local FIELDS = {
    { name = "user", kind = "string", required = true, check = validate.user_name },
    { name = "email", kind = "string", required = true, check = validate.email },
    { name = "passwd", kind = "string", required = true, check = password.clear },
    { name = "confirm", kind = "string", required = true },
    { name = "varifycode", kind = "string", required = true, check = codes.well_formed },
    { name = "nick", kind = "string", check = nick_ok },
    { name = "icon", kind = "string", check = icon_ok, default = "" },
    { name = "sex", kind = "integer", check = sex_ok, default = 0 },
}

return function(req)
    local f, bad = request.read(req, FIELDS)
    if not f then return reply.done(ROUTE, req, bad, "refused") end
    local email = f.email:lower()
    -- the obfuscation is a bijection for a given length: equal clear texts, equal inputs
    if f.confirm ~= f.passwd then
        return reply.done(ROUTE, req, { error = errors.PasswdErr }, "confirm differs", email)
    end

    local refused = codes.verify(ROUTE, req, email, f.varifycode)
    if refused then return refused end
    local taken, terr = users.taken(f.user, email)
    if taken == nil then return reply.failed(ROUTE, req, "lookup", terr, email) end
    if taken then
        return reply.done(ROUTE, req, { error = errors.UserExist }, "name or e-mail taken", email)
    end
    refused = codes.may_hash(ROUTE, req, email, f.varifycode)
    if refused then return refused end

    local hash, herr = host.crypto.hash_password(password.clear(f.passwd))
    if not hash then return reply.failed(ROUTE, req, "hashing", herr, email) end
    local uid, cerr = users.create { name = f.user, email = email, pwd_hash = hash,
        nick = f.nick or f.user, icon = f.icon, sex = f.sex }
    if cerr == "exists" then
        return reply.done(ROUTE, req, { error = errors.UserExist },
            "name or e-mail taken meanwhile", email)
    end
    if not uid then return reply.failed(ROUTE, req, "insert", cerr, email) end

    local consumed, rerr = codes.consume(email, f.varifycode)
    if consumed == nil then -- the account exists; the code dies with its TTL
        host.log.warn(ROUTE, ": could not delete the used code: ", tostring(rerr))
    end
    local rsp = { error = errors.Success, uid = uid, user = f.user, email = email }
    return reply.done(ROUTE, req, rsp, "registered uid=" .. uid, email)
end

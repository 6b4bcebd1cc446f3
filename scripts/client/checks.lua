-- client.checks: the field checks the original Qt client's register, reset and login
-- dialogs make before they send anything, with their messages in English. Each form's
-- fields are checked in the dialog's order and the first failing one is reported, as the
-- original's per-field TipErr map shows its first remaining tip. The gate checks
-- everything again; the checks here only spare a round trip and say precisely what is
-- wrong.
local validate = require "lib.validate"
local policy = require "lib.password"

local M = {}

M.USER_EMPTY = "User name is empty"
M.USER_CHARS = "User name may contain only letters and digits"
M.USER_SHAPE = "User name must be 3 to 20 characters and not only digits"
M.EMAIL_EMPTY = "E-mail address is empty"
M.EMAIL_INVALID = "E-mail address is not valid"
M.PASSWORD_INVALID = "Password must be 6 to 15 characters of letters, digits and !@#$%^&*."
M.CONFIRM_MISMATCH = "Passwords do not match"
M.CODE_EMPTY = "Verification code is empty"
M.SEARCH_EMPTY = "Search text is empty"
M.TEXT_EMPTY = "Message is empty"

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
M.trim = trim

local function empty(s) return type(s) ~= "string" or trim(s) == "" end

-- The Qt client's QRegularExpression (\w+)(\.|_)?(\w*)@(\w+)(\.(\w+))+, unanchored (a
-- match anywhere in the text is enough); \w is ASCII [A-Za-z0-9_] there.
local function qt_email(s)
    local at = s:find("@", 1, true)
    while at do
        local before, after = s:sub(1, at - 1), s:sub(at + 1)
        if before:find("[%w_]+%.?[%w_]*$") and after:find("^[%w_]+%.[%w_]+") then return true end
        at = s:find("@", at + 1, true)
    end
    return false
end

-- user(name) -> true | nil, message (register: non-empty, alphanumeric as the original's
-- input validator; 3..20 and not all digits as the gate requires)
function M.user(s)
    if empty(s) then return nil, M.USER_EMPTY end
    if not s:match("^[%a%d]+$") then return nil, M.USER_CHARS end
    if not validate.user_name(s) then return nil, M.USER_SHAPE end
    return true
end

-- email(address) -> true | nil, message (register and reset: the original's pattern, and
-- the shape the gate accepts)
function M.email(s)
    if empty(s) then return nil, M.EMAIL_EMPTY end
    if not qt_email(s) or not validate.email(s) then return nil, M.EMAIL_INVALID end
    return true
end

-- login_email(address) -> true | nil, message (login: non-empty only, as the original)
function M.login_email(s)
    if empty(s) then return nil, M.EMAIL_EMPTY end
    return true
end

-- password(clear) -> true | nil, message: the gate's policy (lib.password), 6..15
-- characters of [a-zA-Z0-9!@#$%^&*.]
function M.password(s)
    if not policy.acceptable(s) then return nil, M.PASSWORD_INVALID end
    return true
end

-- confirm(password, confirm) -> true | nil, message
function M.confirm(password, confirm)
    if password ~= confirm then return nil, M.CONFIRM_MISMATCH end
    return M.password(confirm)
end

function M.code(s)
    if empty(s) then return nil, M.CODE_EMPTY end
    return true
end

-- Runs checks in order: list of { field, fn, args... } -> true | nil, message, field
local function first_failure(list)
    for _, c in ipairs(list) do
        local ok, msg = c[2](unpack(c, 3))
        if not ok then return nil, msg, c[1] end
    end
    return true
end

-- The forms. Each -> true | nil, message, field name.
function M.login(f)
    return first_failure {
        { "email", M.login_email, f.email }, { "password", M.password, f.password },
    }
end

function M.register(f)
    local confirm = f.confirm
    if confirm == nil then confirm = f.password end
    return first_failure {
        { "user", M.user, f.user }, { "email", M.email, f.email },
        { "password", M.password, f.password }, { "confirm", M.confirm, f.password, confirm },
        { "code", M.code, f.code },
    }
end

function M.reset(f)
    local function user_given(s)
        if empty(s) then return nil, M.USER_EMPTY end
        return true
    end
    return first_failure {
        { "user", user_given, f.user }, { "email", M.email, f.email },
        { "password", M.password, f.password }, { "code", M.code, f.code },
    }
end

-- Before the code is requested: the e-mail only.
function M.get_code(email)
    local ok, msg = M.email(email)
    if not ok then return nil, msg, "email" end
    return true
end

return M

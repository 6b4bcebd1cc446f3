-- resource.identity: who a resource connection is (docs/protocol.md §13.2). The Season 2
-- client connects before its chat login and sends a token only in a transfer's first
-- request, so the connection is bound to a uid by the first request whose (uid, token) is a
-- live chat session's (lib.tokens.session_valid: the chat server keeps it while the user
-- is logged in); from then on every request must name that uid or none, and the session's
-- uid is the only identity a request has. Kept in session.data (the host's, so it outlives
-- a script reload). A bound connection's session is checked again when it was last checked
-- more than resource.session_recheck_ms ago: once the chat session has ended (logout, a
-- newer login elsewhere), the connection is anonymous again (1010).
local errors = require "lib.errors"
local failure = require "lib.failure"
local tokens = require "lib.tokens"
local host = require "host"
local wire = require "resource.wire"
local settings = require "resource.settings"

local M = {}

-- who(session, body) -> uid | nil, code, field
-- Bound: a request naming another uid is refused (1015). Not bound: without a token 1014,
-- a uid that is not one 1011, a token that is not that user's live session 1010.
-- still(session) -> true | nil, code, field: the bound session's token is still its
-- user's live chat session (checked again after resource.session_recheck_ms)
local function still(session)
    local data = session.data
    local now = host.timer.monotonic()
    if now - data.checked_ms < settings.session_recheck_ms then return true end
    local ok, err = tokens.session_valid(data.uid, data.token)
    if ok == nil then
        host.log.warn("resource session check of uid ", data.uid, ": ", tostring(err))
        return nil, failure.code(err)
    end
    if not ok then
        data.uid, data.token = nil, nil
        return nil, errors.TokenInvalid, "token"
    end
    data.checked_ms = now
    return true
end

function M.who(session, body)
    local bound = session.data.uid
    local named = body.uid
    if named == host.null then named = nil end
    local uid = wire.positive(named)
    if bound then
        if named ~= nil and uid ~= bound then return nil, errors.PermissionDenied, "uid" end
        local ok, code, field = still(session)
        if not ok then return nil, code, field end
        return bound
    end
    local token = body.token
    if type(token) ~= "string" or token == "" then return nil, errors.NotLoggedIn end
    if not uid or uid >= 2 ^ 32 then return nil, errors.UidInvalid, "uid" end
    local ok, err = tokens.session_valid(uid, token)
    if ok == nil then
        host.log.warn("resource session check of uid ", uid, ": ", tostring(err))
        return nil, failure.code(err)
    end
    if not ok then return nil, errors.TokenInvalid, "token" end
    session.data.uid, session.data.token = uid, token
    session.data.checked_ms = host.timer.monotonic()
    return uid
end

return M

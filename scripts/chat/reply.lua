-- chat.reply: the answer to a failure that is not the client's fault (Redis, MySQL, a
-- lock): logged with what failed, answered 1018 when a retry may well succeed (a pool or
-- lock was busy, a timeout) and 1019 otherwise (docs/protocol.md §2). 1018 says "safe to
-- retry": a write whose outcome is unknown must not report itself as "timeout" (see
-- chat.batch).
local host = require "host"
local errors = require "lib.errors"

local M = {}

local RETRYABLE = { busy = true, timeout = true }

-- failed(msg_id, what, err, extra?) -> reply {error=1018|1019, ...extra}
function M.failed(msg_id, what, err, extra)
    host.log.warn(msg_id, ": ", what, " failed: ", tostring(err))
    local rsp = { error = RETRYABLE[err] and errors.ServerBusy or errors.Internal }
    for k, v in pairs(extra or {}) do rsp[k] = v end
    return rsp
end

return M

-- chat.reply: the answer to a failure that is not the client's fault (Redis, MySQL, a
-- lock): logged with what failed, answered by lib.failure's rule (1018 for "busy" and
-- "timeout", safe to retry; 1019 otherwise; docs/protocol.md §2).
local host = require "host"
local failure = require "lib.failure"

local M = {}

-- failed(msg_id, what, err, extra?) -> reply {error=1018|1019, ...extra}
function M.failed(msg_id, what, err, extra)
    host.log.warn(msg_id, ": ", what, " failed: ", tostring(err))
    local rsp = { error = failure.code(err) }
    for k, v in pairs(extra or {}) do rsp[k] = v end
    return rsp
end

return M

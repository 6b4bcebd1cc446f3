-- lib.failure: one rule for the error code of a failure that is not the client's fault (a
-- store, a lock, the hash queue), for the gate's replies and the chat servers' alike:
-- "busy" (a pool, queue or lock could not be had in time) and "timeout" (no answer in
-- time) are 1018 ServerBusy, "safe to retry"; anything else is 1019 Internal. So a write
-- whose outcome is unknown must not report itself as "timeout" (see chat.batch).
local errors = require "lib.errors"

local M = {}

M.RETRYABLE = { busy = true, timeout = true }

-- code(err) -> errors.ServerBusy | errors.Internal
function M.code(err)
    return M.RETRYABLE[err] and errors.ServerBusy or errors.Internal
end

return M

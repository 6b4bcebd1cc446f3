-- lib.failure: one rule for the error code of a failure that is not the client's fault (a
-- store, a lock, the hash queue), for the gate's replies and the chat servers' alike:
-- "busy" (a pool, queue or lock could not be had in time) and "timeout" (no answer in
-- time) are 1018 ServerBusy, "safe to retry", and so is "redis unavailable: ..." (the host's
-- Redis client never sent the command: no connection, or a master switch in progress
-- under Sentinel); anything else is 1019 Internal. So a write whose outcome is unknown
-- must not report itself as "timeout" (see chat.batch).
local errors = require "lib.errors"

local M = {}

M.RETRYABLE = { busy = true, timeout = true }

-- code(err) -> errors.ServerBusy | errors.Internal
function M.code(err)
    if M.RETRYABLE[err] then return errors.ServerBusy end
    if type(err) == "string" and err:find("^redis unavailable") then return errors.ServerBusy end
    return errors.Internal
end

return M

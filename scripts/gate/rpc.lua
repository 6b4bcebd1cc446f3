-- gate.rpc: the gate's gRPC calls to the verify and status roles, each with a deadline
-- (gate.accounts.rpc_timeout_ms, else grpc.deadline_ms): a role that is down or stuck
-- costs a request at most the deadline, never a hang.
local host = require "host"
local settings = require "gate.settings"

local M = {}

local function call(target, method, req)
    local rsp, err, code = host.grpc.call(target, method, req,
        { timeout_ms = settings.rpc_timeout_ms })
    if not rsp then
        host.log.warn(method, " at ", target, " failed: ", tostring(err), " (", tostring(code), ")")
        return nil, err
    end
    return rsp
end

-- get_varify_code(email) -> GetVarifyRsp | nil, err
function M.get_varify_code(email)
    return call(settings.verify_target, "VarifyService.GetVarifyCode", { email = email })
end

-- get_chat_server(uid) -> GetChatServerRsp | nil, err
function M.get_chat_server(uid)
    return call(settings.status_target, "StatusService.GetChatServer", { uid = uid })
end

return M

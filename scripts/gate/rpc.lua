-- gate.rpc: the gate's gRPC calls to the verify and status roles, each with a deadline
-- (gate.accounts.rpc_timeout_ms, else grpc.deadline_ms): a role that is down or stuck
-- costs a request at most the deadline, never a hang. A failed call answers nil, err, code
-- (err as host.grpc.call gives it: "STATUS: details"); M.failure says which failure it was.
local host = require "host"
local settings = require "gate.settings"

local M = {}

local function call(target, method, req)
    local rsp, err, code = host.grpc.call(target, method, req,
        { timeout_ms = settings.rpc_timeout_ms })
    if not rsp then
        host.log.warn(method, " at ", target, " failed: ", tostring(err), " (", tostring(code), ")")
        return nil, err, code
    end
    return rsp
end

local S = host.grpc.status

-- failure(role, err, code) -> what a failed call to role was, for the request's log line:
-- "<role> unreachable: ..." (no connection), "<role> did not answer in time: ...", or
-- "<role> failed: ..." with the role's own words (e.g. verify's "mail to ... failed").
function M.failure(role, err, code)
    local what = code == S.UNAVAILABLE and " unreachable: "
        or code == S.DEADLINE_EXCEEDED and " did not answer in time: " or " failed: "
    return role .. what .. tostring(err)
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

-- gate.settings: the gate's account settings (config gate.accounts; defaults and ranges in
-- host/lua/config.lua) and the gRPC targets of the verify and status roles, resolved once
-- per script generation: config does not change while the process runs.
local host = require "host"

local accounts = host.config.gate.accounts

local M = {
    code_max_tries = accounts.code_max_tries,
    code_ip_limit = accounts.code_ip_limit,
    code_ip_window_s = accounts.code_ip_window_s,
    login_email_limit = accounts.login_email_limit,
    login_ip_limit = accounts.login_ip_limit,
    login_window_s = accounts.login_window_s,
    rehash_on_login = accounts.rehash_on_login,
    rpc_timeout_ms = accounts.rpc_timeout_ms or host.config.grpc.deadline_ms,
}

local function target(role)
    local s = host.config[role]
    return s.host .. ":" .. s.port
end

M.verify_target = accounts.verify_target or target("verify")
M.status_target = accounts.status_target or target("status")

return M

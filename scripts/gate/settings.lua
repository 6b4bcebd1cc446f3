-- gate.settings: the gate's account settings (config gate.accounts; defaults and ranges in
-- host/lua/config.lua, which fills them all) with the optional ones resolved: the gRPC
-- deadline and the targets of the verify and status roles; and the resource server's
-- address that a login reply names (resource.public_host and public_port, or the TLS
-- proxy's public_host, as strings: the Season 2 client reads them with toString()), and
-- the WebSocket scheme (wss behind the proxy). Resolved once per script
-- generation: config does not change while the process runs.
local host = require "host"

local M = host.config_copy().gate.accounts

local function target(role)
    local s = host.config[role]
    return s.host .. ":" .. s.port
end

M.rpc_timeout_ms = M.rpc_timeout_ms or host.config.grpc.deadline_ms
M.verify_target = M.verify_target or target("verify")
M.status_target = M.status_target or target("status")
local proxy = host.config.tls_proxy
M.reshost = proxy.enabled and proxy.public_host or host.config.resource.public_host
M.resport = tostring(host.config.resource.public_port)
M.ws_scheme = proxy.enabled and "wss" or "ws"

return M

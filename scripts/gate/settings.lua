-- gate.settings: the gate's account settings (config gate.accounts; defaults and ranges in
-- host/lua/config.lua, which fills them all) with the optional ones resolved: the gRPC
-- deadline and the targets of the verify and status roles; and the resource server's
-- address that a login reply names (resource.public_host and port, as strings: the Season 2
-- client reads them with toString()); with tls_proxy.enabled, the proxy's addresses for a
-- login that came through it (proxy). Resolved once per script
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
M.reshost = host.config.resource.public_host
M.resport = tostring(host.config.resource.port)

-- The TLS proxy's addresses (docs/protocol.md §5.6): its public host, the resource
-- channel's public port, and by the "host:port" each chat server announces (public_host,
-- port) that server's public port and public WebSocket port.
local function proxy()
    local p = host.config.tls_proxy
    if not p.enabled then return nil end
    local chats = {}
    for name in pairs(host.config_copy().chat.instances) do
        local c = assert(host.config_instance("chat", name))
        chats[c.public_host .. ":" .. c.port] = { port = tostring(c.public_port),
            ws_port = c.public_ws_port and tostring(c.public_ws_port) or nil }
    end
    return { host = p.public_host, resport = tostring(host.config.resource.public_port),
        chats = chats }
end
M.proxy = proxy()

return M

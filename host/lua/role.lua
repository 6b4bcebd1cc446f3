-- chathost.role: the entry point of a role process, one path for every role. Looks the
-- role up in the table of roles (chathost.roles), loads its scripts with hot reload,
-- starts the servers its entry names (gRPC, HTTP, chat; the admin listener for all), then
-- runs the scripts' optional start(). Servers look handlers up in the current generation
-- on every request, so a reload takes effect on the next one.
local host = require "host"
local admin = require "chathost.admin"
local roles = require "chathost.roles"

local M = {}

local known_methods
-- "Service.Method" keys must name a method of the proto and hold a function; chat
-- messages are msg_id -> function; routes "METHOD /path" -> function. A typo fails the
-- load, not a request much later. Each server the role starts demands its table.
local VALIDATE = {}

function VALIDATE.grpc(handlers)
    if not known_methods then
        known_methods = {}
        for _, m in ipairs(host.pb.methods()) do known_methods[m] = true end
    end
    for k, v in pairs(handlers) do
        if type(k) == "string" and k:match("^%u%w*%.%u%w*$") then
            if not known_methods[k] then return nil, k .. " is not a method of proto/message.proto" end
            if type(v) ~= "function" then return nil, k .. " must be a function" end
        end
    end
    return true
end

function VALIDATE.chat(handlers)
    if type(handlers.messages) ~= "table" then return nil, "messages must be a table" end
    for k, v in pairs(handlers.messages) do
        if type(k) ~= "number" or k < 0 or k > 65535 or k % 1 ~= 0 then
            return nil, ("messages key %s must be a msg_id (0..65535)"):format(tostring(k))
        end
        if type(v) ~= "function" then return nil, "messages[" .. k .. "] must be a function" end
    end
    return true
end

function VALIDATE.http(handlers)
    if type(handlers.routes) ~= "table" then return nil, "routes must be a table" end
    for k, v in pairs(handlers.routes) do
        if type(k) ~= "string" or not k:match("^%u+ /%S*$") then
            return nil, ("route %s must look like \"POST /path\""):format(tostring(k))
        end
        if type(v) ~= "function" then return nil, "route " .. k .. " must be a function" end
    end
    return true
end

-- The validator of a role's handler tables: every server of its entry checks its own.
local function validator(entry)
    return function(handlers)
        for _, kind in ipairs(roles.SERVER_KINDS) do
            if entry.servers[kind] then
                local ok, err = VALIDATE[kind](handlers)
                if not ok then return nil, err end
            end
        end
        return true
    end
end

local function fail(msg)
    io.stderr:write("chathost: ", msg, "\n")
    return 2
end

-- One starter per server kind: (scripts, self, port) -> server | nil, err, detail. The
-- options a server takes from the section are the limits config.lua names for it; a
-- declared role's section has none of them, so the server's own defaults apply.
local START = {}

function START.grpc(scripts, self, port)
    local address = self.host .. ":" .. tostring(port)
    local server, err, detail = host.grpc.serve { address = address,
        handlers = function(name) return scripts:handlers()[name] end }
    if not server then return nil, err, detail end
    host.log.info("gRPC listening on ", address)
    if not host.config.grpc.secret then
        host.log.warn("grpc.secret is not set: this gRPC server takes calls from anyone who ",
            "reaches ", address, " (set CHATHOST_GRPC_SECRET; make run generates one)")
    end
    return server
end

-- A plain copy of a config list (read-only: # does not see through it).
local function copy_list(list)
    local out, i = {}, 1
    while list and list[i] ~= nil do
        out[i] = list[i]
        i = i + 1
    end
    return out
end

-- Addresses in the form the servers compare peers in (host.ip: canonical).
local function canonical(list)
    local out = {}
    local i = 1
    while list and list[i] ~= nil do -- (a read-only config list: # does not see through it)
        out[i] = host.ip(list[i])
        i = i + 1
    end
    return out
end

function START.http(scripts, self, port)
    local address = self.host .. ":" .. port
    local server, err = host.http.serve {
        address = address, name = host.role, reuseport = (self.workers or 1) > 1,
        routes = function() return scripts:handlers().routes end,
        max_url_bytes = self.max_url_bytes, max_header_bytes = self.max_header_bytes,
        max_body_bytes = self.max_body_bytes, read_timeout_ms = self.read_timeout_ms,
        idle_timeout_ms = self.idle_timeout_ms, handler_timeout_ms = self.handler_timeout_ms,
        max_connections = self.max_connections, access_log = self.access_log,
        max_connections_per_ip = self.max_connections_per_ip,
        first_byte_timeout_ms = self.first_byte_timeout_ms,
        per_ip_exempt = canonical(self.trusted_proxies),
    }
    if not server then return nil, err end
    host.log.info("HTTP listening on ", address)
    return server
end

-- entry.chat_options (the role's fixed server options: the resource role's frame header
-- and "no login") go over the section's limits.
function START.chat(scripts, self, port, entry)
    local address = self.host .. ":" .. port
    local opts = {
        address = address, name = self.name or host.name,
        handlers = function() return scripts:handlers() end,
        max_body_bytes = self.max_body_bytes, send_queue_bytes = self.send_queue_bytes,
        send_queue_frames = self.send_queue_frames,
        idle_timeout_ms = self.heartbeat_timeout_ms or self.channel_idle_timeout_ms,
        max_connections = self.max_connections, handler_timeout_ms = self.handler_timeout_ms,
        fd_reserve = self.fd_reserve, login_timeout_ms = self.login_timeout_ms,
        max_connections_per_ip = self.max_connections_per_ip,
    }
    if (self.ws_port or 0) > 0 then -- the WebSocket listener (docs/protocol.md §5.5)
        opts.ws_address = self.host .. ":" .. self.ws_port
        opts.ws_origins = copy_list(self.ws_origins)
        opts.ws_max_message_bytes = self.ws_max_message_bytes
        opts.ws_ping_interval_ms = self.ws_ping_interval_ms
        opts.ws_handshake_timeout_ms = self.ws_handshake_timeout_ms
        opts.ws_handshake_max_bytes = self.ws_handshake_max_bytes
    end
    for k, v in pairs(entry.chat_options or {}) do opts[k] = v end
    local server, err = host.chat.serve(opts)
    if not server then return nil, err end
    host.log.info("chat listening on ", address)
    if opts.ws_address then host.log.info("chat WebSocket listening on ", opts.ws_address) end
    return server
end

-- Starts the servers of the role's entry in roles.SERVER_KINDS order (M.grpc, M.http,
-- M.chat), then its admin listener; nil, err, detail at the first that cannot listen.
-- Users' traffic (the gate's HTTP with its xor-obfuscated passwords, the chat and resource
-- channels with their tokens) has no TLS of chathost's own yet: a server of it on an address
-- other hosts can reach says so at start-up (README "Security").
local function loopback(address)
    return address == "localhost" or address == "::1" or address:match("^127%.") ~= nil
end

local function warn_without_tls(kind, address_host, port)
    if loopback(address_host) then return end
    host.log.warn(host.role, ": ", kind, " on ", address_host, ":", port, " is reachable from",
        " other hosts WITHOUT TLS: passwords (xor-obfuscated only) and tokens cross the network",
        " in clear; put a TLS-terminating proxy in front or keep it on a private network",
        " (README, Security)")
end

local function start_servers(entry, scripts, self)
    for _, kind in ipairs(roles.SERVER_KINDS) do
        local field = entry.servers[kind]
        if field then
            local server, err, detail = START[kind](scripts, self, self[field], entry)
            if not server then return nil, err, detail end
            M[kind] = server
            if kind ~= "grpc" then warn_without_tls(kind, self.host, self[field]) end
            if kind == "chat" and (self.ws_port or 0) > 0 then
                warn_without_tls("WebSocket", self.host, self.ws_port)
            end
        end
    end
    local err
    M.admin, err = admin.start(self.admin_port, scripts, entry.stores)
    if not M.admin then return nil, err end
    return true
end

-- At SIGTERM/SIGINT, before servers and clients close: the scripts' stop(), then the chat
-- server closes its sessions (queued frames flushed, on_close run).
local function on_stop(scripts)
    local handlers = scripts:handlers()
    if type(handlers.stop) == "function" then
        local ok, err = pcall(handlers.stop)
        if not ok then host.log.error("stop(): ", err) end
    end
    if M.chat then M.chat:close() end
end

-- A program role (the terminal client) is not a server: its scripts' main(args) runs and
-- its result is the exit status.
local function run_program(args)
    local who = "chathost " .. host.role
    local scripts, err = host.scripts.open { role = host.role, watch = false }
    if not scripts then
        io.stderr:write(who, ": ", err, "\n")
        return 1
    end
    local main = scripts:handlers().main
    if type(main) ~= "function" then
        io.stderr:write(who, ": scripts/", host.role, "/init.lua has no main(args)\n")
        scripts:close()
        return 1
    end
    local code = main(args)
    scripts:close()
    return type(code) == "number" and code or 0
end

local function unknown_role()
    local names = roles.all(host.config_copy())
    local commands = {}
    for c in pairs(roles.COMMANDS) do commands[#commands + 1] = c end
    table.sort(commands)
    return fail(("unknown role or command '%s' (expected %s, or %s; see chathost help)"):format(
        host.role, table.concat(names, ", "), table.concat(commands, ", ")))
end

function M.main(args)
    local entry = roles.get(host.config_copy(), host.role)
    if not entry then return unknown_role() end
    if entry.program then return run_program(args) end
    if #args > 0 then return fail("unexpected argument '" .. args[1] .. "'") end
    local scripts, err = host.scripts.open { role = host.role, validate = validator(entry) }
    if not scripts then
        host.log.error("cannot load the scripts: ", err)
        return 1
    end
    M.scripts = scripts
    -- the current generation's handler table, for code that must follow reloads (timers)
    host.handlers = function() return scripts:handlers() end
    local ok, serr, detail = start_servers(entry, scripts, host.config.self)
    if not ok then
        local code = fail(serr) -- the one line first; gRPC core's account of it is for debugging
        if detail and detail ~= "" then host.log.debug("gRPC core: ", detail) end
        return code
    end
    host.on_stop(function() on_stop(scripts) end)
    local handlers = scripts:handlers()
    if type(handlers.start) == "function" then handlers.start() end
    host.log.info("started; scripts from ", scripts:stats().dir)
end

return M

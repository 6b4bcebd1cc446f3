-- chathost.role: the entry point of a role process. Loads the role's scripts with hot
-- reload, starts the servers the role needs (gRPC for status, verify and chat), and runs
-- the scripts' optional start(). Servers find handlers through the loader on every call,
-- so a reload takes effect on the next request.
local host = require "host"

local M = {}

-- Which config field holds each role's gRPC port.
local GRPC_PORT = { status = "port", verify = "port", chat = "rpc_port" }

local known_methods
-- Every "Service.Method" key of a handler table must name a method of the proto and hold a
-- function: a typo is caught when the scripts load, not when a call never arrives.
local function validate(handlers)
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

local function fail(msg)
    io.stderr:write("chathost: ", msg, "\n")
    return 2
end

function M.main(args)
    if #args > 0 then return fail("unexpected argument '" .. args[1] .. "'") end
    local scripts, err = host.scripts.open { role = host.role, validate = validate }
    if not scripts then
        host.log.error("cannot load the scripts: ", err)
        return 1
    end
    M.scripts = scripts
    -- the current generation's handler table, for code that must follow reloads (timers)
    host.handlers = function() return scripts:handlers() end
    local self = host.config.self
    local port_field = GRPC_PORT[host.role]
    if port_field then
        local address = (self.host or "127.0.0.1") .. ":" .. tostring(self[port_field])
        local server, serr = host.grpc.serve { address = address,
            handlers = function(name) return scripts:handlers()[name] end }
        if not server then return fail(serr) end
        M.grpc = server
        host.log.info("gRPC listening on ", address)
    end
    local handlers = scripts:handlers()
    if type(handlers.start) == "function" then handlers.start() end
    host.log.info("started; scripts from ", scripts:stats().dir)
end

return M

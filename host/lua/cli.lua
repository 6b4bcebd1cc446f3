-- chathost.cli: `chathost config KEY...` prints validated config values (tools/run.sh reads
-- ports with it), a KEY naming a section prints all of it as `full.key = value` lines
-- (passwords and secrets hidden), `chathost config roles` lists the role processes the config and
-- the scripts present describe ("gate", "chat chat1", ...), in start order, and
-- `chathost config ports NAME` the ports one of them listens on.
local host = require "host"
local roles = require "chathost.roles"

local M = {}

local function has_scripts(role)
    local dir = host.config.scripts.dir
    if dir:sub(1, 1) ~= "/" then dir = host.root .. "/" .. dir end
    return host.fs.kind(dir .. "/" .. role .. "/init.lua") == "file"
end

local function processes()
    local cfg = host.config_copy()
    local out = {}
    for _, role in ipairs(roles.names(cfg)) do
        local entry, section = roles.get(cfg, role)
        if has_scripts(role) and type(section) == "table" then
            if entry.instances then
                local names = {}
                for name in pairs(section.instances) do names[#names + 1] = name end
                table.sort(names)
                for _, name in ipairs(names) do out[#out + 1] = role .. " " .. name end
            else
                out[#out + 1] = role
            end
        end
    end
    return out
end

-- The value at a dotted path; a number part indexes a list (gate.trusted_proxies.1).
local function get(path)
    local v = host.config_copy()
    for part in path:gmatch("[^%.]+") do
        if type(v) ~= "table" then return nil end
        local value = v[part]
        if value == nil and part:match("^%d+$") then value = v[tonumber(part)] end
        v = value
    end
    return v
end

-- A section as sorted `path = value` lines (list items as path.1...); an empty table is
-- `path = {}`; a password or a secret (grpc.secret, resource.url_secret), set, is `<hidden>`.
local function section_lines(path, t, out)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
        if type(a) == type(b) then return a < b end
        return type(a) == "number"
    end)
    if #keys == 0 then out[#out + 1] = path .. " = {}" end
    for _, k in ipairs(keys) do
        local p, v = path .. "." .. tostring(k), t[k]
        if type(v) == "table" then
            section_lines(p, v, out)
        else
            if type(k) == "string" and (k:match("password$") or k:match("secret$")) then
                v = "<hidden>"
            end
            out[#out + 1] = p .. " = " .. tostring(v)
        end
    end
    return out
end

-- The ports of the process NAME ("gate", "chat1", "echo"), one a line: the port clients
-- use, gRPC, then the admin port (0: none), as roles.ports orders them.
local function ports(name)
    for _, line in ipairs(processes()) do
        local role, instance = line:match("^(%S+) ?(%S*)$")
        if (instance ~= "" and instance or role) == name then
            local entry = roles.get(host.config_copy(), role)
            local section = assert(host.config_instance(role, instance ~= "" and instance or role))
            local out = {}
            for _, p in ipairs(roles.ports(entry, section)) do out[#out + 1] = tostring(p.port) end
            return out
        end
    end
end

function M.main(args)
    if #args == 0 then
        io.stderr:write("usage: chathost config roles | ports NAME | KEY|SECTION [KEY...]\n")
        return 2
    end
    if args[1] == "roles" then
        for _, r in ipairs(processes()) do io.stdout:write(r, "\n") end
        return 0
    end
    if args[1] == "ports" and args[2] then
        local list = ports(args[2])
        if not list then
            io.stderr:write("chathost config: ports: no role process named ", args[2], "\n")
            return 2
        end
        io.stdout:write(table.concat(list, "\n"), "\n")
        return 0
    end
    for _, key in ipairs(args) do
        local v = get(key)
        if v == nil then
            io.stderr:write("chathost config: ", key, ": not a value\n")
            return 2
        end
        if type(v) == "table" then
            io.stdout:write(table.concat(section_lines(key, v, {}), "\n"), "\n")
        else
            io.stdout:write(tostring(v), "\n")
        end
    end
    return 0
end

return M

-- chathost.roles: the table of roles, the one place that says what a role's process runs.
-- An entry names the servers the role starts (kind -> the field of its config section that
-- holds the port; each kind serves one handler table of the scripts), the stores its
-- /healthz checks, and whether its section has named instances. The built-in roles are
-- below; config.lua declares more under `roles.<name>` (host/lua/config.lua's schema), so a
-- new role is that config entry plus scripts/<name>/init.lua. Read by config.lua (sections,
-- ports), role.lua (start-up), admin.lua (health) and cli.lua (`chathost config roles`).
local M = {}

-- The binary's commands that are not roles (main.c runs them).
M.COMMANDS = { test = true, migrate = true, config = true, exec = true, help = true }

-- order: start order of `make run` (servers first, the gate that calls them last).
-- program: not a server; the scripts' main(args) runs and returns the exit status.
M.BUILTIN = {
    verify = { order = 1, servers = { grpc = "port" }, stores = { "redis" } },
    status = { order = 2, servers = { grpc = "port" }, stores = { "redis" } },
    chat = { order = 3, instances = true, servers = { chat = "port", grpc = "rpc_port" },
        stores = { "redis", "mysql" } },
    -- resource: the Season 2 resource channel (6-byte frames, no login of its own: idle and
    -- unauthenticated until its first upload or download, by the client's contract), and
    -- plain HTTP downloads by signed URL
    resource = { order = 4, servers = { chat = "port", http = "http_port" },
        stores = { "redis", "mysql" },
        chat_options = { frame = "u16u32", login_timeout_ms = 0 } },
    gate = { order = 5, servers = { http = "port" }, stores = { "redis", "mysql" } },
    client = { program = true },
}

-- The servers a role may start, in start order, and the handler table each serves:
-- grpc: "Service.Method" keys; http: `routes`; chat: `messages` (+ on_close, on_capacity).
M.SERVER_KINDS = { "grpc", "http", "chat" }

-- A declared role (config `roles.<name>`) serves each kind whose port it sets.
M.DECLARED_PORTS = { grpc = "grpc_port", http = "http_port", chat = "chat_port" }

local function declared(section)
    local servers = {}
    for kind, field in pairs(M.DECLARED_PORTS) do
        if section[field] ~= nil then servers[kind] = field end
    end
    local stores = {}
    for i, s in ipairs(section.stores or {}) do stores[i] = s end
    return { order = 6, servers = servers, stores = stores }
end

-- The entry of role `name` in config cfg (raw or host.config), with `path`, the dotted
-- path of its section; nil for a name that is no role.
function M.get(cfg, name)
    local builtin = M.BUILTIN[name]
    if builtin then
        local entry = setmetatable({ name = name, path = name }, { __index = builtin })
        return entry, cfg[name]
    end
    local section = type(cfg.roles) == "table" and cfg.roles[name]
    if type(section) ~= "table" then return nil end
    local entry = declared(section)
    entry.name, entry.path = name, "roles." .. name
    return entry, section
end

-- The names of the server roles of cfg (a plain table: pairs), in start order.
function M.names(cfg)
    local out = {}
    for name, e in pairs(M.BUILTIN) do
        if not e.program then out[#out + 1] = name end
    end
    for name in pairs(type(cfg.roles) == "table" and cfg.roles or {}) do out[#out + 1] = name end
    local function order(n) return M.get(cfg, n).order end
    table.sort(out, function(a, b)
        if order(a) ~= order(b) then return order(a) < order(b) end
        return a < b
    end)
    return out
end

-- Every role name, for messages ("gate, verify, ...").
function M.all(cfg)
    local out = M.names(cfg)
    table.insert(out, "client")
    return out
end

-- The ports a process of the role listens on, as { { kind=, field=, port= } }: the port
-- clients use (http, chat) first, then gRPC, then the admin port (0: none); section is the
-- role's resolved section (tools/run.sh reads them in this order).
function M.ports(entry, section)
    local out = {}
    for _, kind in ipairs({ "http", "chat", "grpc" }) do
        local field = entry.servers and entry.servers[kind]
        if field then out[#out + 1] = { kind = kind, field = field, port = section[field] } end
    end
    out[#out + 1] = { kind = "admin", field = "admin_port", port = section.admin_port or 0 }
    return out
end

return M

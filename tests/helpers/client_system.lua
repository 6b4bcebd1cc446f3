-- helpers.client_system: the whole system the terminal client talks to, for the client
-- specs: an SMTP sink, the verify, status and gate roles, the resource role (images) and
-- two chat servers (chat1, chat2) that announce their own liveness, each a real process
-- on free ports; plus the client's scripts loaded as `chathost client` loads them,
-- accounts with fresh names, and codes read from the sink.
local host = require "host"
local roles = require "helpers.roles"
local smtp_sink = require "helpers.smtp_sink"
local res_cluster = require "helpers.res_cluster"

local M = {}
M.__index = M

-- instance_opts(): more settings of the instance (a fresh ws_port), or nil
local function start_chat(name, chat_opts, res, instance_opts)
    return roles.start { role = "chat", name = name, config = function(port)
        -- a killed server stops being chosen within 2 s
        local chat = { report_interval_ms = 200, alive_ttl_s = 2,
            instances = { [name] = { port = port, rpc_port = roles.free_port(),
                admin_port = 0 } } }
        for k, v in pairs(instance_opts and instance_opts() or {}) do chat.instances[name][k] = v end
        for k, v in pairs(chat_opts or {}) do chat[k] = v end
        -- 1049's URLs name the resource role's HTTP port
        return { chat = chat, resource = { port = res.port, http_port = res.http_port,
            public_host = "127.0.0.1" } }
    end }
end

-- start{chat=opts?, instance=fn?, web_client=?} -> system with .sink, .verify, .status,
-- .gate, .resource, .chats = {chat1, chat2}, .gate_url (chat: more of each chat server's
-- section, or fn(system) -> it; instance() -> more of its instance's, called for each
-- start; web_client: the gate's `client` section, which it hands the web client)
function M.start(opts)
    opts = opts or {}
    local self = setmetatable({}, M)
    self.sink = smtp_sink.start()
    self.verify = roles.start { role = "verify", config = function(port)
        return { verify = { port = port, admin_port = 0, resend_interval_s = 1 },
            mail = { url = "smtp://127.0.0.1:" .. self.sink.port } }
    end }
    self.status = roles.start { role = "status", config = function(port)
        return { status = { port = port, admin_port = 0, servers_refresh_ms = 0 } }
    end }
    self.resource = res_cluster.start()
    self.gate = roles.start { role = "gate", config = function(port)
        -- (the config lives in a temporary folder: the project's web client by full path)
        return { gate = { port = port, admin_port = 0, web_dir = host.root .. "/web" },
            resource = { port = self.resource.port, public_host = "127.0.0.1" },
            verify = { port = self.verify.port }, status = { port = self.status.port },
            client = opts.web_client } -- what the gate hands the web client (settings.json)
    end }
    self.gate_url = "http://127.0.0.1:" .. self.gate.port
    local chat = type(opts.chat) == "function" and opts.chat(self) or opts.chat
    self.chats = { start_chat("chat1", chat, self.resource, opts.instance),
        start_chat("chat2", chat, self.resource, opts.instance) }
    return self
end

-- Stops chat server i (SIGTERM: it withdraws and closes its sessions).
function M:stop_chat(i)
    self.chats[i]:stop()
    self.chats[i] = false
end

-- Kills chat server i (SIGKILL: connections cut, its liveness key left to expire).
function M:kill_chat(i)
    local chat = self.chats[i]
    chat.proc:kill("KILL")
    chat.proc:wait(5000)
    host.fs.rmtree(chat.dir)
    self.chats[i] = false
end

function M:stop()
    for _, chat in ipairs(self.chats or {}) do
        if chat then chat:stop() end
    end
    for _, name in ipairs({ "gate", "resource", "status", "verify" }) do
        if self[name] then self[name]:stop() end
    end
    if self.sink then self.sink:stop() end
end

-- The gate counts code requests and failed logins per IP: specs start from zero.
function M.clear_limits()
    host.redis.call("DEL", "rate:code_ip:127.0.0.1", "rate:login_ip:127.0.0.1")
end

-- The client's scripts as `chathost client` loads them: -> loader, handlers
function M.load_client()
    local loader = assert(host.scripts.open { dir = host.root .. "/scripts", role = "client",
        watch = false })
    return loader, loader:handlers()
end

local n = 0
-- A fresh account: {user, email, password}
function M.account(prefix)
    n = n + 1
    local id = host.crypto.random_hex(4)
    local user = ("%s%d%s"):format(prefix or "cl", n, id)
    return { user = user, email = user .. "@example.com", password = "abc123" }
end

-- The code mailed to email (the newest mail to it), waiting up to timeout_ms.
function M:code_for(email, timeout_ms)
    local deadline = host.timer.monotonic() + (timeout_ms or 5000)
    repeat
        local mails = self.sink:messages()
        for i = #mails, 1, -1 do
            if mails[i].headers["x-rcptto"] == email then
                local code = mails[i].body:match("code is (%d%d%d%d%d%d)")
                if code then return code end
            end
        end
        host.timer.sleep(20)
    until host.timer.monotonic() > deadline
    return nil, "no code mailed to " .. email
end

-- Registers acc through a client object: code requested, read from the sink, used.
function M:register(client, acc)
    assert(client:get_code(acc.email))
    local code = assert(self:code_for(acc.email))
    local reg = assert(client:register { user = acc.user, email = acc.email,
        password = acc.password, code = code })
    acc.uid = reg.uid
    return reg
end

return M

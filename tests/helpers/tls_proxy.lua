-- helpers.tls_proxy: a system behind the TLS proxy of tools/tls_proxy.sh for specs: a CA
-- and a certificate it signed for 127.0.0.1 (the openssl CLI), the status and gate roles
-- and two chat servers with WebSocket listeners as real processes whose configs say
-- tls_proxy.enabled (so they announce the proxy's addresses), and the private nginx in front
-- of them on free ports; plus tests/helpers/tls_client.py, the client side over TLS.
local host = require "host"
local roles = require "helpers.roles"
local cluster = require "helpers.chat_cluster"
local res_cluster = require "helpers.res_cluster"
local util = require "helpers.util"

local M = {}
M.__index = M

-- probe() -> true | false, why: whether nginx and its stream module are here
function M.probe()
    local r = host.proc.run({ "sh", "-c", table.concat({
        "command -v nginx >/dev/null || { echo 'no nginx command (tools/deps.sh installs it)'; exit; }",
        "nginx -V 2>&1 | grep -q -- '--with-stream\\b' ||"
            .. " { echo 'nginx was built without the stream module'; exit; }",
        "nginx -V 2>&1 | grep -q -- '--with-stream=dynamic' &&"
            .. " ! ls /usr/lib/nginx/modules/ngx_stream_module.so >/dev/null 2>&1 &&"
            .. " echo 'no ngx_stream_module.so (tools/deps.sh installs libnginx-mod-stream)'",
    }, "\n") })
    local why = r and r.stdout:match("^%s*(.-)%s*$") or "sh failed"
    if why ~= "" then return false, why end
    return true
end

local function run(argv, what)
    local r = assert(host.proc.run(argv))
    assert(r.code == 0, what .. " failed: " .. r.stderr .. r.stdout)
    return r
end

-- ca(dir) -> {ca=, cert=, key=} PEM files: a CA, and an RSA certificate for IP 127.0.0.1
-- and localhost signed by it (RSA: the spec also offers a suite without forward secrecy,
-- which needs an RSA certificate to be possible at all)
function M.ca(dir)
    local f = { ca = dir .. "/ca.pem", ca_key = dir .. "/ca.key", cert = dir .. "/cert.pem",
        key = dir .. "/key.pem", csr = dir .. "/cert.csr", ext = dir .. "/ext.cnf" }
    run({ "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=chathost spec CA", "-keyout", f.ca_key, "-out", f.ca }, "openssl CA")
    run({ "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", f.key, "-out", f.csr }, "openssl request")
    assert(host.fs.write(f.ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"))
    run({ "openssl", "x509", "-req", "-in", f.csr, "-CA", f.ca, "-CAkey", f.ca_key,
        "-CAcreateserial", "-days", "2", "-extfile", f.ext, "-out", f.cert }, "openssl sign")
    return f
end

-- The proxy's sections, shared by every role's config and the proxy's own.
local function proxy_sections(self)
    local p = self.ports
    return {
        tls_proxy = { enabled = true, host = "127.0.0.1", public_host = "127.0.0.1",
            gate_port = p.gate, cert_file = self.files.cert, key_file = self.files.key },
        resource = { port = p.res_plain, http_port = p.res_http_plain, public_port = p.res,
            public_http_port = p.res_http },
    }
end

local function with(base, extra)
    local out = {}
    for k, v in pairs(base) do out[k] = v end
    for k, v in pairs(extra) do out[k] = v end
    return out
end

local function start_chat(self, name)
    local inst = { public_port = roles.free_port(), public_ws_port = roles.free_port() }
    local role = roles.start { role = "chat", name = name, config = function(port)
        inst.port, inst.rpc_port, inst.admin_port = port, roles.free_port(), 0
        inst.ws_port = roles.free_port()
        -- the page the proxy serves may open WebSockets (the gate starts after the chats)
        local chat = with(cluster.CHAT, { instances = { [name] = inst },
            ws_origins = { "https://127.0.0.1:" .. self.ports.gate } })
        return with(proxy_sections(self), { chat = chat })
    end }
    role.name, role.inst = name, inst
    cluster.by_port[role.port] = role
    assert(util.wait_until(function() return host.redis.call("EXISTS", "chatserver_" .. name) == 1 end,
        5000, "chat server " .. name .. " to announce itself"))
    return role
end

-- start() -> system with .status, .gate, .resource, .chats (two, with .inst: port, ws_port,
-- public_port, public_ws_port), .ports (the proxy's: gate, res, res_http; the resource
-- role's own: res_plain, res_http_plain), .files (ca, cert, key), .dir, .gate_url (https,
-- through the proxy)
-- One try at start(), filling self as it goes (so a failed one can be stopped).
local function start(self)
    self.files = M.ca(self.dir)
    self.ports = { gate = roles.free_port(), res = roles.free_port(), res_http = roles.free_port(),
        res_plain = roles.free_port(), res_http_plain = roles.free_port() }
    host.redis.call("DEL", "chatservers") -- names other specs announced
    self.status = cluster.start_status()
    self.resource = res_cluster.start { resource = { port = self.ports.res_plain,
        http_port = self.ports.res_http_plain } }
    local tag = host.crypto.random_hex(3)
    self.chats = { start_chat(self, "tls1" .. tag), start_chat(self, "tls2" .. tag) }
    local instances = {}
    for _, c in ipairs(self.chats) do instances[c.name] = c.inst end
    -- the gate knows the chat servers' proxy ports from its config, as in a shared config
    self.gate = roles.start { role = "gate", config = function(port)
        return with(proxy_sections(self), {
            gate = { port = port, admin_port = 0, web_dir = host.root .. "/web" },
            status = { port = self.status.port },
            chat = with(cluster.CHAT, { instances = instances }) })
    end }
    -- the proxy's config: the same sections, and every listener it fronts
    self.config_path = self.dir .. "/proxy-config.lua"
    assert(host.fs.write(self.config_path, "return " .. roles.serialize(with(proxy_sections(self), {
        gate = { port = self.gate.port, admin_port = 0 },
        chat = with(cluster.CHAT, { instances = instances }),
    })) .. "\n"))
    self.proxy_dir = self.dir .. "/proxy"
    local r = self:tool("start")
    assert(r.code == 0, "tools/tls_proxy.sh start: " .. r.stderr .. r.stdout)
    self.gate_url = "https://127.0.0.1:" .. self.ports.gate
end

-- The ports are drawn at random like every spec's: one another process took meanwhile (the
-- proxy's, or the resource role's, fixed before the roles start) means another try.
local TAKEN = { "Address already in use", "cannot listen", "no free port" }

function M.start()
    for try = 1, 3 do
        local self = setmetatable({ dir = assert(host.fs.mkdtemp("tlsproxy")) }, M)
        local ok, err = pcall(start, self)
        if ok then return self end
        self:stop()
        local taken = false
        for _, t in ipairs(TAKEN) do taken = taken or tostring(err):find(t, 1, true) ~= nil end
        if not taken or try == 3 then error(err, 0) end
    end
end

-- tool(cmd) -> the result of `tools/tls_proxy.sh cmd` for this system's proxy
function M:tool(cmd)
    return assert(host.proc.run({ host.root .. "/tools/tls_proxy.sh", cmd, self.proxy_dir },
        { env = { CHATHOST_CONFIG = self.config_path, CHATHOST_BIN = util.bin() } }))
end

-- client(args...) -> the JSON tls_client.py printed (raises when it failed); env = {...}
-- as the last argument sets its environment
function M:client(...)
    local argv = { "/usr/bin/python3", host.root .. "/tests/helpers/tls_client.py" }
    local env
    for _, a in ipairs({ ... }) do
        if type(a) == "table" then env = a else argv[#argv + 1] = tostring(a) end
    end
    local r = assert(host.proc.run(argv, { env = env }))
    assert(r.code == 0, "tls_client.py " .. tostring(argv[3]) .. ": " .. r.stderr)
    return assert(host.json.decode(r.stdout))
end

-- user(clear) -> {uid, email, password}: a user row whose password hashes clear
function M.user(clear)
    local u = cluster.user()
    assert(host.db.exec("UPDATE user SET pwd_hash = ? WHERE uid = ?",
        assert(host.crypto.hash_password(clear)), u.uid))
    u.password = clear
    return u
end

function M:stop()
    if self.config_path and self.proxy_dir then self:tool("stop") end
    for _, c in ipairs(self.chats or {}) do c:stop() end
    if self.gate then self.gate:stop() end
    if self.status then self.status:stop() end
    if self.resource then self.resource:stop() end
    host.fs.rmtree(self.dir)
end

return M

-- helpers.netns_cluster: the whole system with every part on a host of its own, on the
-- private network of helpers.netns: Redis (with a password) on "redis", MariaDB on
-- "mysql", the status role on "status", the gate on "gate", chat servers chat1 and chat2
-- on hosts of those names. Each role gets a config file as an operator would write it for
-- its machine (bind_host = the host's own address, the status role's and the chat
-- instances' addresses, no admin listener) and the stores' addresses and passwords in
-- the environment (CHATHOST_REDIS_*, CHATHOST_MYSQL_*; CHATHOST_GRPC_SECRET is the run's).
-- Ports are the defaults: every host has its own. The spec process (root namespace,
-- net.root_ip) talks to all of them: .redis and .db are clients of the system's stores.
--
-- start{relays = true} (where the kernel has no netem): every store and server is reached
-- through a delay relay on its own host (helpers.netns relay), at the host's relay_ip:
-- the roles dial relay addresses (the stores', status's, the chat servers' public_host),
-- each binds its own ip, and cl.net:delay(host, ms) delays what goes through that host's
-- relay. The spec process still talks to the stores directly.
local host = require "host"
local netns = require "helpers.netns"
local roles = require "helpers.roles"
local util = require "helpers.util"
local http = require "helpers.http"

local M = {}
M.__index = M

M.HOSTS = { "redis", "mysql", "status", "gate", "chat1", "chat2" }
M.CHATS = { "chat1", "chat2" }
M.PORTS = { gate = 8080, status = 50052, chat = 8090, chat_rpc = 50055, redis = 6379,
    mysql = 3306 }
M.PASSWORD = "abc123" -- every user's
M.PROBE_INTERVAL_MS, M.PROBE_TIMEOUT_MS = 300, 200
M.CHAT_REPORT_MS = 200 -- chat.report_interval_ms: how often the status role's loads change

local password = dofile(host.root .. "/scripts/lib/password.lua")

local function secret() return host.crypto.random_hex(16) end

-- The address by which the roles reach host name's services: its relay's, if it has one.
function M:dial(name)
    local h = self.net.hosts[name]
    return self.relays and h.relay_ip or h.ip
end

-- The config file of a role on host own.
function M:config(own)
    local ip = function(name) return self.net.hosts[name].ip end
    local instances = {}
    for _, c in ipairs(M.CHATS) do
        instances[c] = { host = ip(c), public_host = self:dial(c), port = M.PORTS.chat,
            rpc_port = M.PORTS.chat_rpc, admin_port = 0 }
    end
    return {
        bind_host = ip(own),
        -- both stores' addresses are also in the environment (which wins), as make test's are
        redis = { host = self:dial("redis"), port = M.PORTS.redis },
        mysql = { host = self:dial("mysql"), port = M.PORTS.mysql, database = "chathost" },
        -- the status role binds its own address; the others dial its relay
        status = { host = own == "status" and ip("status") or self:dial("status"),
            port = M.PORTS.status, admin_port = 0,
            servers_refresh_ms = 0, probe_interval_ms = M.PROBE_INTERVAL_MS,
            probe_timeout_ms = M.PROBE_TIMEOUT_MS },
        gate = { port = M.PORTS.gate, admin_port = 0 },
        verify = { admin_port = 0 },
        chat = {
            -- a long liveness TTL: a cut host's key outlives the spec, only probes drop it
            alive_ttl_s = 60, report_interval_ms = M.CHAT_REPORT_MS, kick_timeout_ms = 500,
            instances = instances,
        },
    }
end

function M:env()
    return { CHATHOST_REDIS_HOST = self:dial("redis"),
        CHATHOST_REDIS_PORT = tostring(M.PORTS.redis),
        CHATHOST_REDIS_PASSWORD = self.redis_password,
        CHATHOST_MYSQL_HOST = self:dial("mysql"),
        CHATHOST_MYSQL_PORT = tostring(M.PORTS.mysql),
        CHATHOST_MYSQL_USER = "chathost", CHATHOST_MYSQL_PASSWORD = self.mysql_password,
        CHATHOST_MYSQL_DATABASE = "chathost" }
end

-- Runs a role on its host: -> helpers.roles role
function M:start_role(hostname, role, name)
    local r = roles.start { role = role, name = name, env = self:env(),
        prefix = self.net:argv(hostname, {}),
        config = function() return self:config(hostname) end }
    self.roles[#self.roles + 1] = r
    return r
end

function M:start_redis()
    self.redis_dir = assert(host.fs.mkdtemp("nsredis"))
    self.redis_proc = assert(self.net:spawn("redis", { "redis-server",
        "--port", tostring(M.PORTS.redis), "--bind", self.net.hosts.redis.ip,
        "--requirepass", self.redis_password, "--dir", self.redis_dir, "--save", "",
        "--appendonly", "no", "--daemonize", "no" }, { stdout = "capture", stderr = "capture" }))
    assert(util.wait_until(function()
        local out = self.redis_proc:output()
        if self.redis_proc.exited then error("redis-server exited: " .. out) end
        return out:find("Ready to accept connections", 1, true)
    end, 10000, "Redis on its host to start"))
    self.redis = host.redis.new { host = self.net.hosts.redis.ip, port = M.PORTS.redis,
        password = self.redis_password, pool_size = 1 }
    local pong, perr = self.redis:call("PING")
    if pong ~= "PONG" then error("Redis on its host: " .. tostring(perr or pong)) end
end

local function sh(argv, what)
    local r = assert(host.proc.run(argv, { timeout_ms = 30000 }))
    if r.code ~= 0 then error(what .. " failed (" .. r.code .. "): " .. r.stderr .. r.stdout, 2) end
    return r
end

-- MariaDB on its host, as tools/services.sh starts it but bound to the host's address,
-- its user granted from the network's /24 only, the migrations applied from here.
function M:start_mysql()
    local dir = assert(host.fs.mkdtemp("nsmysql"))
    self.mysql_dir = dir
    local install = { "mariadb-install-db", "--no-defaults", "--force",
        "--datadir=" .. dir .. "/data", "--user=root", "--auth-root-authentication-method=normal",
        "--skip-test-db", "--skip-name-resolve" }
    -- on a machine loaded far beyond its cores its bootstrap has been seen to fail once
    local r = assert(host.proc.run(install, { timeout_ms = 60000 }))
    if r.code ~= 0 then
        host.log.warn("mariadb-install-db failed (", r.code, "), once more: ", r.stdout:sub(1, 2000))
        host.fs.rmtree(dir .. "/data")
        sh(install, "mariadb-install-db")
    end
    local sock = dir .. "/mysqld.sock"
    self.mysql_proc = assert(self.net:spawn("mysql", { "mariadbd", "--no-defaults",
        "--datadir=" .. dir .. "/data", "--socket=" .. sock, "--pid-file=" .. dir .. "/mysqld.pid",
        "--port=" .. M.PORTS.mysql, "--bind-address=" .. self.net.hosts.mysql.ip, "--user=root",
        "--skip-name-resolve", "--log-error=" .. dir .. "/error.log",
        "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M", "--skip-log-bin",
        "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci" },
        { stdout = "null", stderr = "null" }))
    assert(util.wait_until(function()
        if self.mysql_proc.exited then
            error("mariadbd exited: " .. tostring(host.fs.read(dir .. "/error.log")))
        end
        local r = host.proc.run({ "mariadb-admin", "--no-defaults", "--protocol=socket",
            "--socket=" .. sock, "-uroot", "ping" }, { timeout_ms = 2000 })
        return r and r.code == 0
    end, 30000, "MariaDB on its host to answer", 100))
    sh({ "bash", "-c", '. "$1/tools/services.sh" && shift && mariadb_setup "$@"', "_",
        host.root, dir, "chathost", "chathost", self.mysql_password, self.net.prefix .. "%" },
        "mariadb_setup")
    local env = self:env()
    env.CHATHOST_CONFIG = host.root .. "/config.lua"
    local r = util.chathost({ "migrate" }, { env = env })
    if r.code ~= 0 then error("migrate failed: " .. r.stderr) end
    self.db = assert(host.db.new { host = self.net.hosts.mysql.ip, port = M.PORTS.mysql,
        user = "chathost", password = self.mysql_password, database = "chathost",
        pool_size = 2 })
end

-- The ports each host's relay forwards (start{relays = true}).
local RELAYED = { redis = { M.PORTS.redis }, mysql = { M.PORTS.mysql },
    status = { M.PORTS.status }, chat1 = { M.PORTS.chat, M.PORTS.chat_rpc },
    chat2 = { M.PORTS.chat, M.PORTS.chat_rpc } }

-- start(opts?) -> cluster with .net, .redis, .db, .status, .gate, .chats[name] (roles with
-- .name, .host: the address clients dial). opts.relays: see the top. Whatever fails half
-- way is stopped again before the error is raised.
function M.start(opts)
    local self = setmetatable({ roles = {}, chats = {}, redis_password = secret(),
        mysql_password = secret(), relays = opts and opts.relays or nil }, M)
    local ok, err = pcall(function()
        self.net = netns.create(M.HOSTS)
        if self.relays then
            for _, name in ipairs(M.HOSTS) do
                if RELAYED[name] then self.net:relay(name, RELAYED[name]) end
            end
        end
        self:start_redis()
        self:start_mysql()
        self.status = self:start_role("status", "status")
        self.gate = self:start_role("gate", "gate")
        for _, c in ipairs(M.CHATS) do
            local r = self:start_role(c, "chat", c)
            r.name, r.host = c, self:dial(c)
            self.chats[c] = r
        end
        for _, c in ipairs(M.CHATS) do
            assert(util.wait_until(function()
                return self.redis:call("EXISTS", "chatserver_" .. c) == 1
            end, 5000, c .. " to announce itself"))
        end
        self.hash = assert(host.crypto.hash_password(M.PASSWORD))
    end)
    if not ok then
        self:stop()
        error(err, 0)
    end
    return self
end

-- delay(ms): ms more (nil: none) on the way between any two hosts: netem on every host's
-- way out, or with relays, each relay holding back both directions of what goes through it
-- (every connection between the roles goes through exactly one relay).
function M:delay(ms)
    for _, name in ipairs(M.HOSTS) do
        if not self.relays or RELAYED[name] then self.net:delay(name, ms) end
    end
end

-- Stops every process, then removes the network (each step goes on when one fails).
function M:stop()
    -- links up again (a test that failed with one cut): roles then stop without waiting
    -- out their stores' timeouts
    if self.net then
        for _, h in ipairs(self.net.order) do pcall(self.net.link, self.net, h.name, true) end
    end
    for i = #self.roles, 1, -1 do pcall(self.roles[i].stop, self.roles[i]) end
    self.roles = {}
    if self.db then pcall(self.db.close, self.db) self.db = nil end
    if self.redis then pcall(self.redis.close, self.redis) self.redis = nil end
    for _, p in ipairs({ self.redis_proc, self.mysql_proc }) do
        if not p.exited then
            p:kill("TERM")
            if not p:wait(10000) then p:kill("KILL") p:wait() end
        end
    end
    self.redis_proc, self.mysql_proc = nil, nil
    if self.net then self.net:destroy() end
    for _, d in ipairs({ self.redis_dir, self.mysql_dir }) do host.fs.rmtree(d) end
end

local seq = 0

-- user() -> {uid, name, email}: a registered user (password M.PASSWORD, a real hash)
function M:user()
    seq = seq + 1
    local tag = host.crypto.random_hex(4)
    local u = { name = ("nu%d_%s"):format(seq, tag), email = ("nu%d.%s@example.com"):format(seq, tag) }
    u.uid = assert(self.db:exec("INSERT INTO user (name, email, pwd_hash, nick, icon, `desc`, sex)"
        .. " VALUES (?, ?, ?, ?, '', '', 0)", u.name, u.email, self.hash, u.name)).insert_id
    return u
end

-- befriend(a, b) -> thread_id: friend rows and the pair's thread, straight in MariaDB
function M:befriend(a, b)
    assert(self.db:exec("INSERT INTO friend (self_id, friend_id, back) VALUES (?, ?, ''), (?, ?, '')",
        a.uid, b.uid, b.uid, a.uid))
    local t = assert(self.db:exec("INSERT INTO chat_thread (type) VALUES ('private')"))
    assert(self.db:exec("INSERT INTO private_chat (thread_id, user1_id, user2_id) VALUES (?, ?, ?)",
        t.insert_id, math.min(a.uid, b.uid), math.max(a.uid, b.uid)))
    return t.insert_id
end

-- gate_login(user) -> the gate's /user_login reply (decoded), over the network
function M:gate_login(user)
    local c = http.connect(M.PORTS.gate, self.net.hosts.gate.ip)
    local res, err = c:post_json("/user_login", { email = user.email,
        passwd = password.xor(M.PASSWORD) })
    c:close()
    assert(res, err)
    assert(res.status == 200, res.body)
    return assert(res.json, res.body)
end

-- The chat server name whose address a gate reply names (nil: none of them).
function M:chat_at(reply)
    for name, r in pairs(self.chats) do
        if reply.host == r.host and tonumber(reply.port) == M.PORTS.chat then return name end
    end
end

return M

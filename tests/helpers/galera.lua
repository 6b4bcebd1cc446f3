-- helpers.galera: the local 3-node Galera cluster of tools/galera.sh for the specs: start,
-- kill -9 one node, restart it (it rejoins), stop; pools on the whole cluster or on one node.
local host = require "host"

local M = {}
M.__index = M

local SCRIPT = host.root .. "/tools/galera.sh"
M.DATABASE, M.USER = "chathost_galera", "chathost"

local function sh(argv, timeout_ms)
    local r = assert(host.proc.run(argv, { timeout_ms = timeout_ms or 120000 }))
    if r.code ~= 0 then return nil, (r.stderr or "") .. (r.stdout or "") end
    return r.stdout
end

-- probe() -> true | nil, why Galera cannot run here (the spec is skipped then)
function M.probe()
    if host.fs.kind("/usr/lib/galera/libgalera_smm.so") ~= "file" then
        return nil, "/usr/lib/galera/libgalera_smm.so is missing (galera-4, tools/deps.sh)"
    end
    for _, tool in ipairs({ "rsync", "mariadbd", "mariadb-install-db" }) do
        if not sh({ "sh", "-c", "command -v " .. tool }) then return nil, tool .. " is missing" end
    end
    return true
end

-- start() -> cluster {dir, nodes = {"127.0.0.1:p", ...}, password, env} | raises
function M.start()
    local dir = assert(host.fs.mkdtemp("galera"))
    assert(sh({ "chmod", "0755", dir })) -- the nodes run as user mysql when we are root
    local self = setmetatable({ dir = dir, password = host.crypto.random_hex(12) }, M)
    local out, err = sh({ SCRIPT, "start", dir .. "/c", M.DATABASE, M.USER, self.password })
    if not out then
        sh({ SCRIPT, "stop", dir .. "/c" })
        error("tools/galera.sh start failed: " .. err)
    end
    local list = assert(out:match("CHATHOST_MYSQL_NODES=(%S+)"), out)
    self.nodes = {}
    for n in list:gmatch("[^,]+") do self.nodes[#self.nodes + 1] = n end
    -- the chathost processes of the spec (roles, migrate) on the cluster
    self.env = { CHATHOST_MYSQL_NODES = list, CHATHOST_MYSQL_DATABASE = M.DATABASE,
        CHATHOST_MYSQL_USER = M.USER, CHATHOST_MYSQL_PASSWORD = self.password }
    return self
end

-- pool(i?) -> a host.db pool on node i alone (reads wait until the node has applied
-- what the cluster committed before: wsrep_sync_wait in tools/galera.sh), or on all nodes
function M:pool(i, opts)
    local cfg = { nodes = i and { self.nodes[i] } or self.nodes, database = M.DATABASE,
        user = M.USER, password = self.password, node_retry_ms = 100 }
    for k, v in pairs(opts or {}) do cfg[k] = v end
    return assert(host.db.new(cfg))
end

function M:kill(i) assert(sh({ SCRIPT, "kill", self.dir .. "/c", tostring(i) })) end

-- restart(i): node i starts again and rejoins (IST, or SST when its state is too old);
-- returns once it is Synced
function M:restart(i) assert(sh({ SCRIPT, "restart", self.dir .. "/c", tostring(i) })) end

function M:stop()
    sh({ SCRIPT, "stop", self.dir .. "/c" })
    host.fs.rmtree(self.dir)
end

return M

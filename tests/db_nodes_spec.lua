-- db_nodes_spec.lua: host.db pools over several nodes (mysql.nodes, mysql.policy,
-- mysql.node_retry_ms) against the one private MariaDB of tools/test.sh: the other
-- "nodes" are a port that refuses and a relay (helpers/delay_relay.py on 127.0.0.2) to the
-- same server, which the spec stops and starts again. The real 3-node Galera cluster is
-- tests/db_galera_spec.lua's.
local host = require "host"
local util = require "helpers.util"
local cluster = require "helpers.chat_cluster"
local db = host.db

local PORT = tonumber(host.config.mysql.port)

-- Nothing listens on 127.0.0.3 (the test MariaDB binds 127.0.0.1): connections are refused.
local REFUSED = "127.0.0.3:" .. PORT

-- A relay 127.0.0.2:PORT -> 127.0.0.1:PORT (the test MariaDB) -> process
local function relay_start()
    local dir = assert(host.fs.mkdtemp("relay"))
    assert(host.fs.write(dir .. "/delay_ms", "0"))
    local p = assert(host.proc.spawn({ "/usr/bin/python3",
        host.root .. "/tests/helpers/delay_relay.py", "127.0.0.2", "127.0.0.1",
        dir .. "/delay_ms", tostring(PORT) }, { stdout = "capture", stderr = "capture" }))
    assert(util.wait_until(function() return p.exited or p:output():find("ready", 1, true) end,
        10000, "the relay to start"))
    assert(not p.exited, "relay: " .. p:output())
    return p
end

local function relay_stop(p)
    p:kill("KILL")
    p:wait(5000)
end

local function node(pool, i) return pool:stats().nodes[i] end

describe("host.db over several nodes", function()
    timeout(30000)
    local relay, pool

    after_each(function()
        if pool then pool:close() end
        if relay and not relay.exited then relay_stop(relay) end
        pool, relay = nil, nil
    end)

    it("refuses nodes that are not host:port and unknown policies", function()
        for _, bad in ipairs({ { "127.0.0.1" }, { "127.0.0.1:0" }, { ":3306" }, { 3306 },
            "127.0.0.1:x" }) do
            local ok, err = pcall(db.new, { nodes = bad })
            assert.is_false(ok, tostring(bad))
            assert.matches("nodes", err)
        end
        local ok, err = pcall(db.new, { policy = "random" })
        assert.is_false(ok)
        assert.matches("prefer_first", err)
    end)

    it("is one node, host:port, when no nodes are given", function()
        pool = assert(db.new { pool_size = 1 })
        assert(pool:query("SELECT 1"))
        local nodes = pool:stats().nodes
        assert.equal(1, #nodes)
        assert.equal("127.0.0.1:" .. PORT, nodes[1].address)
        assert.equal(1, nodes[1].connections)
    end)

    it("prefer_first: skips a node that refuses, marks it dead and serves from the next",
        function()
            pool = assert(db.new { pool_size = 2, node_retry_ms = 60000,
                nodes = { REFUSED, "127.0.0.1:" .. PORT } })
            for _ = 1, 4 do assert(pool:query("SELECT 1")) end
            assert.is_true(node(pool, 1).dead)
            assert.equal(0, node(pool, 1).connections)
            assert.is_false(node(pool, 2).dead)
            assert.equal(1, node(pool, 1).failures) -- tried once, then left for node_retry_ms
        end)

    it("spread: worker i starts at node i % n", function()
        relay = relay_start()
        pool = assert(db.new { pool_size = 2, policy = "spread",
            nodes = { "127.0.0.2:" .. PORT, "127.0.0.1:" .. PORT } })
        local handles = {}
        -- two statements at once: each worker connects
        for i = 1, 2 do
            handles[i] = host.spawn(function() return pool:query("SELECT SLEEP(0.2) AS s") end)
        end
        for i = 1, 2 do assert(handles[i]:wait()) end
        assert.equal(1, node(pool, 1).connections)
        assert.equal(1, node(pool, 2).connections)
    end)

    it("leaves a node that went away and goes back to it after node_retry_ms", function()
        relay = relay_start()
        pool = assert(db.new { pool_size = 1, node_retry_ms = 100,
            nodes = { "127.0.0.2:" .. PORT, "127.0.0.1:" .. PORT } })
        assert(pool:query("SELECT 1"))
        assert.equal(1, node(pool, 1).connections)
        relay_stop(relay)
        -- the statement on the lost connection fails (its outcome is not known); the next
        -- ones run on node 2
        local rows, err, errno = pool:query("SELECT 1")
        if not rows then assert.is_true(errno == 2006 or errno == 2013, tostring(err)) end
        assert(pool:query("SELECT 1"))
        assert.equal(0, node(pool, 1).connections)
        assert.equal(1, node(pool, 2).connections)
        assert.is_true(node(pool, 1).failures >= 1)
        relay = relay_start()
        assert(util.wait_until(function()
            assert(pool:query("SELECT 1")) -- never fails: the move happens between statements
            return node(pool, 1).connections == 1
        end, 10000, "the pool back on node 1", 50))
        assert.equal(0, node(pool, 2).connections)
    end)

    it("shows each node in a role's /metrics: up, connections, failures", function()
        -- the dead node is not tried again during the test (it would count as up between
        -- its retry time and the next statement)
        local chat = cluster.start_chat { config = { mysql = { node_retry_ms = 600000 } },
            env = { CHATHOST_MYSQL_NODES = REFUSED .. ",127.0.0.1:" .. PORT } }
        local dead, live = { node = REFUSED }, { node = "127.0.0.1:" .. PORT }
        -- the chat server's reports run SELECT 1 on its pool
        local ok, err = util.wait_until(function()
            return cluster.metric(chat, "chathost_mysql_node_connections", 0, live) >= 1
        end, 10000, "a connection to the live node")
        local up_dead = cluster.metric(chat, "chathost_mysql_node_up", nil, dead)
        local up_live = cluster.metric(chat, "chathost_mysql_node_up", nil, live)
        local failures = cluster.metric(chat, "chathost_mysql_node_failures_total", nil, dead)
        chat:stop()
        assert(ok, err)
        assert.same({ 0, 1 }, { up_dead, up_live })
        assert.truthy(failures >= 1)
    end)

    it("fails a statement only when every node is down, then serves again", function()
        relay = relay_start()
        pool = assert(db.new { pool_size = 1, node_retry_ms = 100,
            nodes = { "127.0.0.2:" .. PORT, REFUSED } })
        assert(pool:query("SELECT 1"))
        relay_stop(relay)
        pool:query("SELECT 1") -- the lost connection
        local rows, err = pool:query("SELECT 1")
        assert.is_nil(rows)
        assert.matches("cannot connect", err)
        relay = relay_start()
        assert(util.wait_until(function() return pool:query("SELECT 1") end, 10000,
            "a statement served again", 50))
    end)
end)

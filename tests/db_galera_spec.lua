-- db_galera_spec.lua: chathost on a real 3-node MariaDB Galera cluster on loopback
-- (tools/galera.sh through helpers.galera; issue 16). One cluster for the whole file:
-- migrations run once per cluster (two runs at once on two nodes); a transaction losing
-- certification against another node's runs again; under steady chat load node 1 (where the chat server's
-- pool is, prefer_first) is killed with SIGKILL: the pool moves on, every acked message
-- is on both surviving nodes, the history pages are exact; node 1 restarts, rejoins and
-- the chat server's connections go back to it, and it has every acked message too. Acked
-- and stored messages are counted: any acked message missing, or any stored message that
-- was neither acked nor answered with an unknown outcome, fails. Skipped, saying why,
-- where Galera is not installed.
local host = require "host"
local galera = require "helpers.galera"
local cluster = require "helpers.chat_cluster"
local chat_client = require "helpers.chat_client"
local util = require "helpers.util"

local ok, why = galera.probe()
if not ok then
    io.stderr:write(spec_file, ": SKIPPED: Galera unavailable: ", why, "\n")
    pending("MariaDB Galera: skipped, " .. why)
    return
end

local SENDERS = 4 -- pairs of friends, each sender sending one message at a time

describe("MariaDB Galera", function()
    timeout(240000)
    local g, pool, chat

    setup(function()
        g = galera.start()
        pool = g:pool(3) -- the spec's own writes and reads: never on node 1, which it kills
    end)

    teardown(function()
        if chat then chat:stop() end
        if pool then pool:close() end
        if g then g:stop() end
    end)

    -- node i's connections of user chathost other than the asking one (the chat server's)
    local function connections_on(i)
        local p = g:pool(i, { pool_size = 1 })
        local rows, err = p:query("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST"
            .. " WHERE USER = ? AND ID <> CONNECTION_ID()", galera.USER)
        p:close()
        return rows and rows[1].n or nil, err
    end

    it("applies the migrations once per cluster, also when two runs on two nodes start at once",
        function()
        -- one run connected to node 2, the other to node 3 (prefer_first): their GET_LOCKs
        -- do not see each other, the cluster's lock row does
        local runs = {}
        for i, list in ipairs({ { 2, 3 }, { 3, 2 } }) do
            local env = {}
            for k, v in pairs(g.env) do env[k] = v end
            env.CHATHOST_MYSQL_NODES = g.nodes[list[1]] .. "," .. g.nodes[list[2]]
            runs[i] = host.spawn(function()
                return util.chathost({ "migrate" }, { env = env, timeout_ms = 60000 })
            end)
        end
        for i = 1, 2 do
            local _, r = runs[i]:wait()
            assert.equal(0, r.code, r.stderr)
        end
        local files = #assert(host.fs.list(host.root .. "/sql"))
        for i = 1, 3 do
            local p = g:pool(i, { pool_size = 1 })
            local rows = assert(p:query("SELECT version, COUNT(*) AS n FROM schema_migrations"
                .. " GROUP BY version"))
            p:close()
            assert.equal(files, #rows)
            for _, r in ipairs(rows) do assert.equal(1, r.n) end
        end
        local env = { CHATHOST_LOG_LEVEL = "info" }
        for k, v in pairs(g.env) do env[k] = v end
        local again = util.chathost({ "migrate" }, { env = env, timeout_ms = 60000 })
        assert.equal(0, again.code, again.stderr)
        assert.matches("schema is up to date", again.stderr)
    end)

    it("runs a transaction that lost certification against another node's again", function()
        local sql = dofile(host.root .. "/scripts/lib/sql.lua")
        assert(pool:exec("CREATE TABLE t_cert (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB"))
        assert(pool:exec("INSERT INTO t_cert VALUES (1, 0)"))
        local retries0 = tonumber(host.metrics.render():match(
            "\nchathost_db_conflict_retries_total (%d+)")) or 0
        local pools, runs, updated = { g:pool(2), g:pool(3) }, { 0, 0 }, {}
        -- each updates the row on its own node; on its first run it commits only once the
        -- other has updated too, so both write sets reach certification and one loses
        local function worker(i)
            return host.spawn(function()
                return sql.retry_conflicts(function()
                    return pools[i]:tx(function(tx)
                        runs[i] = runs[i] + 1
                        assert(tx:exec("UPDATE t_cert SET n = n + 1 WHERE id = 1"))
                        if runs[i] == 1 then
                            updated[i] = true
                            assert(util.wait_until(function() return updated[3 - i] end, 10000))
                        end
                        return i
                    end)
                end)
            end)
        end
        local a, b = worker(1), worker(2)
        assert.same({ true, 1 }, { a:wait() })
        assert.same({ true, 2 }, { b:wait() })
        for i = 1, 2 do pools[i]:close() end
        assert.equal(3, runs[1] + runs[2]) -- the loser ran twice
        assert.equal(2, assert(pool:query("SELECT n FROM t_cert WHERE id = 1"))[1].n)
        assert.equal(retries0 + 1, tonumber(host.metrics.render():match(
            "\nchathost_db_conflict_retries_total (%d+)")))
        assert(pool:exec("DROP TABLE t_cert"))
    end)

    -- a user row (on node 3) and a chat login token
    local function user()
        local name = "g" .. host.crypto.random_hex(6)
        local res = assert(pool:exec("INSERT INTO user (name, email, pwd_hash) VALUES (?, ?, ?)",
            name, name .. "@example.com", "$argon2id$not-a-real-hash"))
        local u = { uid = res.insert_id }
        cluster.token(u)
        return u
    end

    local function befriend(a, b)
        assert(pool:exec("INSERT INTO friend (self_id, friend_id) VALUES (?, ?), (?, ?)",
            a.uid, b.uid, b.uid, a.uid))
        local t = assert(pool:exec("INSERT INTO chat_thread (type) VALUES ('private')"))
        assert(pool:exec("INSERT INTO private_chat (thread_id, user1_id, user2_id) VALUES (?, ?, ?)",
            t.insert_id, math.min(a.uid, b.uid), math.max(a.uid, b.uid)))
        return t.insert_id
    end

    it("moves off a killed node with no acked message lost, and back once it rejoined",
        function()
            chat = cluster.start_chat { env = g.env }
            local acked, unknown, refused = {}, {}, 0 -- unique_id -> {message_id, content}
            local stop, senders, pairs_ = false, {}, {}
            for s = 1, SENDERS do
                local a, b = user(), user()
                local thread = befriend(a, b)
                local c = assert(chat_client.connect(chat.port))
                local r = assert(c:request(1005, { uid = a.uid, token = a.token }, 10000))
                assert.equal(0, r.error, host.json.encode(r))
                pairs_[s] = { a = a, b = b, thread = thread, c = c }
                senders[s] = host.spawn(function()
                    local n = 0
                    while not stop do
                        n = n + 1
                        local uid = ("s%d-%d"):format(s, n)
                        local content = "message " .. uid
                        local ack, err = c:request(1017, { fromuid = a.uid, touid = b.uid,
                            thread_id = thread, text_array = { { content = content,
                                unique_id = uid } } }, 30000)
                        if ack and ack.error == 0 then
                            acked[uid] = { id = ack.chat_datas[1].message_id, content = content,
                                thread = thread }
                        elseif ack and ack.error == 1018 then
                            refused = refused + 1 -- "not stored, retry": must not be stored
                            unknown[uid] = "refused"
                        else
                            unknown[uid] = ack and ack.error or err -- outcome unknown
                        end
                    end
                end)
            end
            local function count() local n = 0 for _ in pairs(acked) do n = n + 1 end return n end
            -- steady load, all on node 1 (prefer_first)
            assert(util.wait_until(function() return count() >= 40 end, 30000, "40 acks"))
            assert.truthy(connections_on(1) >= 1)
            local up = { node = g.nodes[1] }
            assert.equal(1, cluster.metric(chat, "chathost_mysql_node_up", nil, up))
            g:kill(1)
            local at_kill = count()
            assert(util.wait_until(function() return count() >= at_kill + 40 end, 60000,
                "40 acks after the kill"))
            assert.truthy(connections_on(2) >= 1) -- the next node of the list took over
            assert.truthy(cluster.metric(chat, "chathost_mysql_node_failures_total", nil, up) >= 1)
            g:restart(1)
            -- the chat server goes back to node 1 (node_retry_ms) while the load goes on
            -- (the pool's own count: a connection that finds node 1 still joining is closed)
            assert(util.wait_until(function()
                return cluster.metric(chat, "chathost_mysql_node_connections", nil, up) >= 1
            end, 30000, "the chat server back on node 1", 200))
            assert.truthy(connections_on(1) >= 1)
            local at_back = count()
            assert(util.wait_until(function() return count() >= at_back + 20 end, 30000,
                "20 acks after the return"))
            stop = true
            for s = 1, SENDERS do senders[s]:wait() end

            -- acked vs stored, on every node (node 1 has caught up with what it missed)
            local n_acked = count()
            for i = 1, 3 do
                local p = g:pool(i, { pool_size = 1 })
                local stored, n_stored = {}, 0
                for s = 1, SENDERS do
                    local rows = assert(p:query("SELECT message_id, content, unique_id FROM"
                        .. " chat_message WHERE thread_id = ?", pairs_[s].thread))
                    for _, r in ipairs(rows) do
                        stored[r.unique_id] = r
                        n_stored = n_stored + 1
                    end
                end
                p:close()
                local missing, extra = {}, {}
                for uid, m in pairs(acked) do
                    local r = stored[uid]
                    if not r or r.message_id ~= m.id or r.content ~= m.content then
                        missing[#missing + 1] = uid
                    end
                end
                for uid in pairs(stored) do
                    if not acked[uid] and (not unknown[uid] or unknown[uid] == "refused") then
                        extra[#extra + 1] = uid
                    end
                end
                assert.same({}, missing, ("node %d: acked %d, stored %d"):format(i, n_acked, n_stored))
                assert.same({}, extra, ("node %d: stored but neither acked nor unknown"):format(i))
            end

            -- history pages, through the chat server, are exactly the stored rows in order
            local p1 = pairs_[1]
            local rows = assert(pool:query("SELECT message_id FROM chat_message WHERE thread_id = ?"
                .. " ORDER BY message_id", p1.thread))
            local cursor, got = 0, {}
            repeat
                local r = assert(p1.c:request(1029, { thread_id = p1.thread, message_id = cursor },
                    10000))
                assert.equal(0, r.error)
                for _, d in ipairs(r.chat_datas) do got[#got + 1] = { message_id = d.msg_id } end
                cursor = r.last_message_id
            until not r.load_more
            assert.same(rows, got)
            for s = 1, SENDERS do pairs_[s].c:close() end
            chat:stop()
            chat = nil
            local n_unknown = 0
            for _ in pairs(unknown) do n_unknown = n_unknown + 1 end
            io.stderr:write(("%s: %d acked (%d before the kill, %d before the return), %d not"
                .. " acked (%d answered 1018)\n"):format(spec_file, n_acked, at_kill, at_back,
                n_unknown, refused))
        end)
end)

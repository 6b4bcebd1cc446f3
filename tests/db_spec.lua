-- db_spec.lua: host.db against the private MariaDB that tools/test.sh starts (user
-- chathost, database chathost_test, already migrated). Tables made here are t_dbspec_*.
local host = require "host"
local util = require "helpers.util"
local db = host.db

-- Polls a condition that no host event signals (another coroutine reaching a point).
local function wait_until(cond)
    while not cond() do host.timer.sleep(2) end
end

local function count_rows(pool, sql, ...)
    local rows = assert((pool or db).query(sql, ...))
    return rows[1].n
end

local function is_lost_connection(errno)
    return errno == 2006 or errno == 2013 or errno == 1927
end

describe("host.db", function()
    setup(function()
        assert(db.exec("DROP TABLE IF EXISTS t_dbspec_a"))
        assert(db.exec([[CREATE TABLE t_dbspec_a (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            name VARCHAR(191) NULL,
            big BIGINT NULL,
            dbl DOUBLE NULL,
            body MEDIUMTEXT NULL,
            UNIQUE KEY uniq_dbspec_name (name)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci]]))
    end)

    teardown(function()
        assert(db.exec("DROP TABLE IF EXISTS t_dbspec_a"))
    end)

    before_each(function()
        assert(db.exec("DELETE FROM t_dbspec_a"))
    end)

    describe("values", function()
        it("round-trips utf8mb4 text, NULL, integers, doubles and a 100 KB text", function()
            local long = string.rep("聊天😀0123456789", 5000) -- 100,000 bytes
            assert.equal(100000, #long)
            local res = assert(db.exec(
                "INSERT INTO t_dbspec_a (name, big, dbl, body) VALUES (?, ?, ?, ?)",
                "😀 聊天", 2 ^ 40, -3.25, long))
            local rows = assert(db.query(
                "SELECT id, name, big, dbl, body FROM t_dbspec_a WHERE id = ?", res.insert_id))
            assert.equal(1, #rows)
            local row = rows[1]
            assert.equal(res.insert_id, row.id)
            assert.equal("😀 聊天", row.name)
            assert.equal(2 ^ 40, row.big)
            assert.equal(-3.25, row.dbl)
            assert.equal(#long, #row.body)
            assert.equal(long, row.body)
        end)

        it("binds nil and host.null as NULL, trailing nils included, and NULL reads as an absent key",
            function()
                assert(db.exec("INSERT INTO t_dbspec_a (name, big, dbl) VALUES (?, ?, ?)",
                    "nulls", host.null, nil))
                local rows = assert(db.query(
                    "SELECT name, big, dbl, body FROM t_dbspec_a WHERE name = ?", "nulls"))
                assert.same({ { name = "nulls" } }, rows)
            end)

        it("binds booleans as 0/1, doubles exactly and strings byte for byte", function()
            local rows = assert(db.query("SELECT ? AS yes, ? AS no, ? AS tenth, ? AS bytes",
                true, false, 0.1, "a\0b\255"))
            assert.equal(1, rows[1].yes)
            assert.equal(0, rows[1].no)
            assert.equal(0.1, rows[1].tenth)
            assert.equal("a\0b\255", rows[1].bytes)
        end)

        it("returns integers beyond 2^53 as decimal strings, DECIMAL as a string, dates as text",
            function()
                local rows = assert(db.query([[SELECT 9007199254740993 AS big,
                    -9007199254740993 AS neg, CAST(18446744073709551615 AS UNSIGNED) AS umax,
                    9007199254740991 AS exact, CAST(1.50 AS DECIMAL(5,2)) AS price,
                    CAST('2024-01-02 03:04:05' AS DATETIME) AS at, DATE('2024-01-02') AS day]]))
                local row = rows[1]
                assert.equal("9007199254740993", row.big)
                assert.equal("-9007199254740993", row.neg)
                assert.equal("18446744073709551615", row.umax)
                assert.equal(9007199254740991, row.exact)
                assert.equal("1.50", row.price)
                assert.equal("2024-01-02 03:04:05", row.at)
                assert.equal("2024-01-02", row.day)
            end)

        it("returns an empty array when no row matches", function()
            assert.same({}, assert(db.query("SELECT id FROM t_dbspec_a WHERE id = ?", -1)))
        end)
    end)

    it("stores SQL-injection strings verbatim and leaves the table alone", function()
        local evil = { "x'); DROP TABLE t_dbspec_a; --", "' OR '1'='1" }
        for _, s in ipairs(evil) do
            assert(db.exec("INSERT INTO t_dbspec_a (name) VALUES (?)", s))
        end
        for _, s in ipairs(evil) do
            local rows = assert(db.query("SELECT name FROM t_dbspec_a WHERE name = ?", s))
            assert.same({ { name = s } }, rows)
        end
        assert.same({}, assert(db.query("SELECT name FROM t_dbspec_a WHERE name = ?",
            "nobody' OR '1'='1")))
        assert.equal(2, count_rows(nil, "SELECT COUNT(*) AS n FROM t_dbspec_a"))
    end)

    describe("exec", function()
        it("returns affected and insert_id", function()
            local first = assert(db.exec("INSERT INTO t_dbspec_a (name) VALUES (?), (?)", "a", "b"))
            assert.equal(2, first.affected)
            assert.truthy(first.insert_id > 0)
            local second = assert(db.exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "c"))
            -- ids as AUTO_INCREMENT gave them (tools/test.sh: every third value)
            local ids = assert(db.query("SELECT id FROM t_dbspec_a ORDER BY id"))
            assert.same({ { id = first.insert_id }, { id = ids[2].id }, { id = second.insert_id } }, ids)
            local upd = assert(db.exec("UPDATE t_dbspec_a SET big = ? WHERE name IN (?, ?)", 7, "a", "c"))
            assert.equal(2, upd.affected)
            assert.equal(0, upd.insert_id)
        end)

        it("reports a duplicate key as nil, message, 1062 and keeps working", function()
            assert(db.exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "dup"))
            local res, err, errno = db.exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "dup")
            assert.is_nil(res)
            assert.matches("Duplicate entry", err)
            assert.equal(1062, errno)
            assert(db.exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "dup2"))
            assert.equal(2, count_rows(nil, "SELECT COUNT(*) AS n FROM t_dbspec_a"))
        end)

        it("runs DDL and statements without a result set", function()
            assert(db.exec("CREATE TABLE IF NOT EXISTS t_dbspec_ddl (id INT PRIMARY KEY)"))
            assert(db.exec("ALTER TABLE t_dbspec_ddl ADD COLUMN note VARCHAR(10) NULL"))
            assert(db.exec("INSERT INTO t_dbspec_ddl (id, note) VALUES (?, ?)", 1, "x"))
            assert.same({ { id = 1, note = "x" } }, assert(db.query("SELECT * FROM t_dbspec_ddl")))
            assert(db.exec("DROP TABLE t_dbspec_ddl"))
        end)
    end)

    describe("tx", function()
        it("commits and returns the function's first value", function()
            local r = assert(db.tx(function(tx)
                assert(tx:exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "t1"))
                local rows = assert(tx:query("SELECT COUNT(*) AS n FROM t_dbspec_a"))
                return rows[1].n
            end))
            assert.equal(1, r)
            assert.equal(true, db.tx(function() end))
            assert.equal(1, count_rows(nil, "SELECT COUNT(*) AS n FROM t_dbspec_a WHERE name = ?", "t1"))
        end)

        it("rolls back when the function raises and returns nil, err", function()
            local r, err = db.tx(function(tx)
                assert(tx:exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "t2"))
                error("boom in the middle")
            end)
            assert.is_nil(r)
            assert.matches("boom in the middle", err)
            assert.equal(0, count_rows(nil, "SELECT COUNT(*) AS n FROM t_dbspec_a"))
        end)

        it("raises when tx is used after the transaction ended", function()
            local kept
            assert(db.tx(function(tx) kept = tx end))
            assert.has_error(function() kept:exec("INSERT INTO t_dbspec_a (name) VALUES ('late')") end,
                "transaction has ended")
            assert.has_error(function() kept:query("SELECT 1") end, "transaction has ended")
            assert.equal(0, count_rows(nil, "SELECT COUNT(*) AS n FROM t_dbspec_a"))
        end)

        it("raises on db.tx inside db.tx in the same coroutine", function()
            local r, err = db.tx(function()
                db.tx(function() end)
            end)
            assert.is_nil(r)
            assert.matches("does not nest", err)
        end)

        it("returns nil, err, errno when a statement fails and the function goes on", function()
            assert(db.exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "dup"))
            local r = assert(db.tx(function(tx)
                local res, err, errno = tx:exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "dup")
                assert.is_nil(res)
                assert.equal(1062, errno)
                assert(tx:exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "other"))
                return "done"
            end))
            assert.equal("done", r)
            assert.equal(2, count_rows(nil, "SELECT COUNT(*) AS n FROM t_dbspec_a"))
        end)

        it("restores autocommit on the pooled connection after commit and rollback", function()
            local one = assert(db.new { pool_size = 1 })
            local other = assert(db.new { pool_size = 1 })
            assert(one:tx(function(tx)
                assert(tx:exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "committed"))
            end))
            assert.is_nil((one:tx(function(tx)
                assert(tx:exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "rolled back"))
                error("roll it back")
            end)))
            assert(one:exec("INSERT INTO t_dbspec_a (name) VALUES (?)", "plain"))
            local rows = assert(other:query("SELECT name FROM t_dbspec_a ORDER BY id"))
            assert.same({ { name = "committed" }, { name = "plain" } }, rows)
            one:close()
            other:close()
        end)

        it("commits nothing of a transaction the server rolled back, not even what its function did after", function()
            local d1 = assert(db.exec("INSERT INTO t_dbspec_a (name) VALUES ('d1')")).insert_id
            local d2 = assert(db.exec("INSERT INTO t_dbspec_a (name) VALUES ('d2')")).insert_id
            -- two transactions lock the two rows in opposite order: InnoDB rolls one back
            -- whole (1213); each goes on as if nothing happened, and inserts a row
            local locked = {}
            local function worker(name, first, second, other)
                return host.spawn(function()
                    return db.tx(function(tx)
                        assert(tx:exec("UPDATE t_dbspec_a SET big = 1 WHERE id = ?", first))
                        locked[name] = true
                        wait_until(function() return locked[other] end)
                        local _, _, errno = tx:exec("UPDATE t_dbspec_a SET big = 2 WHERE id = ?",
                            second)
                        local _, _, after = tx:exec("INSERT INTO t_dbspec_a (name) VALUES (?)",
                            "after " .. name)
                        return { errno = errno, after = after }
                    end)
                end)
            end
            local a, b = worker("a", d1, d2, "b"), worker("b", d2, d1, "a")
            local ra = { a:wait() }
            local rb = { b:wait() }
            assert(ra[1] and rb[1])
            local won, lost = ra, rb
            if ra[2] == nil then won, lost = rb, ra end
            -- the winner committed; the victim's statement after the failure was refused
            -- with the failure's error, and so was its COMMIT
            assert.is_nil(won[2].errno)
            assert.is_nil(won[2].after)
            assert.is_nil(lost[2])
            assert.equal(1213, lost[4])
            assert.equal(1, count_rows(nil, "SELECT COUNT(*) AS n FROM t_dbspec_a WHERE name LIKE 'after %'"))
        end)
    end)

    describe("pool", function()
        it("answers busy while its only connection is held by a transaction, then serves again",
            function()
                local pool = assert(db.new { pool_size = 1, acquire_timeout_ms = 100 })
                local holding, release = false, false
                local holder = host.spawn(function()
                    return pool:tx(function(tx)
                        assert(tx:query("SELECT 1 AS one"))
                        holding = true
                        wait_until(function() return release end)
                        return "released"
                    end)
                end)
                wait_until(function() return holding end)
                local rows, err = pool:query("SELECT 1 AS one")
                assert.is_nil(rows)
                assert.equal("busy", err)
                assert.equal(1, pool:stats().busy_rejections)
                release = true
                assert.same({ true, "released" }, { holder:wait() })
                assert.same({ { one = 1 } }, assert(pool:query("SELECT 1 AS one")))
                pool:close()
            end)

        it("answers busy at once when max_waiting requests already wait", function()
            local pool = assert(db.new { pool_size = 1, max_waiting = 0 })
            local holding, release = false, false
            local holder = host.spawn(function()
                return pool:tx(function()
                    holding = true
                    wait_until(function() return release end)
                end)
            end)
            wait_until(function() return holding end)
            local rows, err = pool:query("SELECT 1")
            assert.is_nil(rows)
            assert.equal("busy", err)
            release = true
            assert.same({ true, true }, { holder:wait() })
            pool:close()
        end)

        it("serves 200 concurrent queries over 4 connections", function()
            local pool = assert(db.new { pool_size = 4, acquire_timeout_ms = 8000 })
            local handles = {}
            for i = 1, 200 do
                handles[i] = host.spawn(function()
                    local rows, err = pool:query("SELECT ? AS n, CONNECTION_ID() AS conn", i)
                    if not rows then return nil, err end
                    return rows[1].n, rows[1].conn
                end)
            end
            local conns, nconns = {}, 0
            for i = 1, 200 do
                local ok, n, conn = handles[i]:wait()
                assert.is_true(ok)
                assert.equal(i, n, conn)
                if not conns[conn] then conns[conn], nconns = true, nconns + 1 end
            end
            assert.truthy(nconns <= 4)
            local stats = pool:stats()
            assert.equal(4, stats.size)
            assert.equal(200, stats.queries)
            assert.equal(0, stats.errors)
            assert.equal(0, stats.waiting)
            assert.equal(4, stats.idle)
            pool:close()
        end)

        it("reconnects after its connection is killed", function()
            local pool = assert(db.new { pool_size = 1 })
            local killer = assert(db.new { pool_size = 1 })
            local before = assert(pool:query("SELECT CONNECTION_ID() AS id"))[1].id
            assert(killer:exec("KILL CONNECTION ?", before))
            local failures, last = 0, nil
            for _ = 1, 3 do
                local rows, err, errno = pool:query("SELECT CONNECTION_ID() AS id")
                if rows then
                    last = rows[1].id
                else
                    failures = failures + 1
                    assert.truthy(is_lost_connection(errno), err)
                end
            end
            assert.truthy(failures <= 1)
            assert.truthy(last and last ~= before)
            assert.equal(1, pool:stats().reconnects)
            pool:close()
            killer:close()
        end)

        it("pings a connection idle longer than ping_idle_ms and replaces it if it is gone",
            function()
                local pool = assert(db.new { pool_size = 1, ping_idle_ms = 1 })
                local killer = assert(db.new { pool_size = 1 })
                local before = assert(pool:query("SELECT CONNECTION_ID() AS id"))[1].id
                assert(killer:exec("KILL CONNECTION ?", before))
                host.timer.sleep(5) -- idle for longer than ping_idle_ms
                local after = assert(pool:query("SELECT CONNECTION_ID() AS id"))[1].id
                assert.is_not.equal(before, after)
                assert.equal(1, pool:stats().reconnects)
                assert.equal(0, pool:stats().errors)
                pool:close()
                killer:close()
            end)

        it("reports its state and counters", function()
            local stats = db.stats()
            for _, k in ipairs({ "size", "busy", "idle", "waiting", "queries", "errors",
                "busy_rejections", "reconnects" }) do
                assert.equal("number", type(stats[k]), k)
            end
            assert.equal(host.config.mysql.pool_size, stats.size)
            assert.equal(stats.size, stats.idle + stats.busy)
        end)

        it("fails a query that runs past read_timeout_s, then serves the next one", function()
            local pool = assert(db.new { pool_size = 1, read_timeout_s = 1 })
            local before = assert(pool:query("SELECT CONNECTION_ID() AS id"))[1].id
            local rows, err, errno = pool:query("SELECT SLEEP(5) AS s")
            assert.is_nil(rows)
            assert.truthy(is_lost_connection(errno), tostring(err) .. " " .. tostring(errno))
            -- the connection that timed out is not reused: a new one answers
            local after = assert(pool:query("SELECT CONNECTION_ID() AS id"))[1].id
            assert.are_not.equal(before, after)
            assert.equal(1, pool:stats().reconnects)
            pool:close()
        end)

        it("fails a request with cannot connect when the server refuses, and keeps serving", function()
            local pool = assert(db.new { pool_size = 1, password = "wrong password" })
            local rows, err, errno = pool:query("SELECT 1")
            assert.is_nil(rows)
            assert.matches("^cannot connect: ", err)
            assert.equal(1045, errno)
            rows, err = pool:query("SELECT 1")
            assert.is_nil(rows)
            assert.matches("^cannot connect: ", err)
            assert.equal(0, pool:stats().busy)
            pool:close()
        end)

        it("fails waiters and refuses work once closed", function()
            local pool = assert(db.new { pool_size = 1, acquire_timeout_ms = 5000 })
            local holding, release = false, false
            -- (results travel in tables: handle:wait() drops values after a nil)
            local holder = host.spawn(function()
                return { pool:tx(function(tx)
                    holding = true
                    wait_until(function() return release end)
                    assert(tx:query("SELECT 1"))
                end) }
            end)
            wait_until(function() return holding end)
            local waiter = host.spawn(function() return { pool:query("SELECT 1") } end)
            wait_until(function() return pool:stats().waiting == 1 end)
            pool:close()
            local ok, res = waiter:wait()
            assert.same({ true, { nil, "pool closed" } }, { ok, res })
            assert.same({ nil, "pool closed" }, { pool:query("SELECT 1") })
            release = true
            ok, res = holder:wait()
            assert.is_true(ok)
            assert.is_nil(res[1])
            assert.matches("pool closed", res[2])
            assert.equal(1, pool:stats().idle)
        end)

        it("keeps a bounded LRU cache of prepared statements per connection", function()
            local pool = assert(db.new { pool_size = 1, stmt_cache = 2 })
            local function prepares() -- this statement takes a cache slot too
                local rows = assert(pool:query("SELECT VARIABLE_VALUE AS n FROM " ..
                    "information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COM_STMT_PREPARE'"))
                return tonumber(rows[1].n)
            end
            local function run(k)
                assert.equal(k, assert(pool:query("SELECT ? AS v", k))[1].v)
            end
            local p0 = prepares()
            run(1) run(1) run(1)
            assert.equal(p0 + 1, prepares()) -- "SELECT ?" once; the status query was cached
            run(2)
            assert(pool:query("SELECT 2 AS other"))  -- evicts the status query
            assert(pool:query("SELECT 3 AS other"))  -- evicts "SELECT ?"
            assert.equal(p0 + 4, prepares())         -- the two new ones and the status query again
            pool:close()
        end)
    end)

    describe("misuse", function()
        it("raises on a parameter that cannot be bound", function()
            assert.has_error(function() db.query("SELECT ?", {}) end, "cannot bind a table")
            assert.has_error(function() db.exec("SELECT ?", print) end, "cannot bind a function")
            assert.has_error(function() db.tx("not a function") end, "expected a function")
        end)

        it("returns nil, err, 1064 on a syntax error", function()
            local rows, err, errno = db.query("SELEC nonsense FROM")
            assert.is_nil(rows)
            assert.matches("SQL syntax", err)
            assert.equal(1064, errno)
            assert.same({ { one = 1 } }, assert(db.query("SELECT 1 AS one")))
        end)

        it("returns nil, err when the parameter count does not match", function()
            local rows, err = db.query("SELECT ? AS a, ? AS b", 1)
            assert.is_nil(rows)
            assert.matches("2 placeholders but 1 parameters", err)
        end)

        it("raises on unknown or invalid pool fields", function()
            assert.has_error(function() db.new { pool_sise = 2 } end, "unknown field 'pool_sise'")
            assert.has_error(function() db.new { pool_size = 0 } end, "pool_size must be an integer")
            assert.has_error(function() db.new { max_result_bytes = 1 } end,
                "max_result_bytes must be an integer in 1024..4294967295")
        end)
    end)
end)

-- These run a child `chathost test` with a 300 ms test timeout (config in dir).
describe("a child process", function()
    local dir = os.getenv("CHATHOST_TEST_TMP") .. "/db_spec_cancel"

    setup(function()
        assert(db.exec("DROP TABLE IF EXISTS t_dbspec_cancel"))
        assert(db.exec("CREATE TABLE t_dbspec_cancel (v INT NOT NULL) ENGINE=InnoDB"))
        assert(host.fs.mkdir(dir))
        assert(host.fs.write(dir .. "/config.lua", "return { test = { timeout_ms = 300 } }\n"))
        assert(host.fs.write(dir .. "/cancel_spec.lua", [[
local host = require "host"
local pool
setup(function() pool = assert(host.db.new { pool_size = 1 }) end)
teardown(function() pool:close() end)
it("holds a transaction past the test timeout", function()
    pool:tx(function(tx)
        assert(tx:exec("INSERT INTO t_dbspec_cancel (v) VALUES (1)"))
        host.timer.sleep(60000)
    end)
end)
it("finds the connection back in the pool, rolled back, with autocommit on", function()
    local rows = assert(pool:query("SELECT COUNT(*) AS n FROM t_dbspec_cancel"))
    assert.equal(0, rows[1].n)
    assert(pool:exec("INSERT INTO t_dbspec_cancel (v) VALUES (2)"))
end)
]]))
        assert(host.fs.write(dir .. "/shutdown_spec.lua", [[
local host = require "host"
it("leaves a query running on the default pool", function()
    host.spawn(function() host.db.query("SELECT SLEEP(1)") end)
    while host.db.stats().busy == 0 do host.timer.sleep(1) end
end)
]]))
    end)

    local function child_test(spec)
        local res = assert(host.proc.run({ os.getenv("CHATHOST_BIN"), "test", "-c",
            dir .. "/config.lua", dir .. "/" .. spec }))
        -- under `make asan` the child is sanitized too; its exit status is the harness's
        assert.is_nil(res.stderr:find("Sanitizer", 1, true), res.stderr)
        return res
    end

    teardown(function()
        assert(db.exec("DROP TABLE IF EXISTS t_dbspec_cancel"))
        host.fs.rmtree(dir)
    end)

    it("rolls back the transaction of a cancelled task and returns its connection", function()
        local res = child_test("cancel_spec.lua")
        assert.matches("1 passed, 1 failed", res.stdout, res.stdout .. res.stderr)
        assert.matches("timeout", res.stdout)
        assert.equal(1, res.code)
        local rows = assert(db.query("SELECT v FROM t_dbspec_cancel"))
        assert.same({ { v = 2 } }, rows)
    end)

    it("lets a running query finish at shutdown and then exits without forcing handles", function()
        local res = child_test("shutdown_spec.lua")
        assert.matches("0 passed, 1 failed", res.stdout, res.stdout .. res.stderr)
        assert.matches("left behind 1 coroutine", res.stdout)
        assert.equal(1, res.code)
        assert.is_nil(res.stderr:find("handles still open", 1, true), res.stderr)
    end)
end)

describe("chathost migrate", function()
    it("is idempotent and records each migration once", function()
        for _ = 1, 2 do
            local res = assert(host.proc.run({ os.getenv("CHATHOST_BIN"), "migrate" }))
            assert.equal(0, res.code, res.stdout .. res.stderr)
        end
        assert.equal(1, count_rows(nil,
            "SELECT COUNT(*) AS n FROM schema_migrations WHERE version = ?", 1))
        local rows = assert(db.query([[SELECT table_name AS name FROM information_schema.tables
            WHERE table_schema = DATABASE() AND table_name IN
            ('user', 'friend', 'friend_apply', 'chat_thread', 'private_chat', 'chat_message')
            ORDER BY table_name]]))
        local names = {}
        for i, r in ipairs(rows) do names[i] = r.name end
        assert.same({ "chat_message", "chat_thread", "friend", "friend_apply", "private_chat", "user" },
            names)
    end)
end)

describe("result size", function()
    it("fails a query whose rows exceed mysql.max_result_bytes, and the pool goes on", function()
        local small = assert(host.db.new { pool_size = 1, max_result_bytes = 2048 })
        local rows, err = small:query("SELECT REPEAT('x', 1000) AS a UNION ALL SELECT REPEAT('y', 1000)"
            .. " UNION ALL SELECT REPEAT('z', 1000) UNION ALL SELECT REPEAT('w', 1000)")
        assert.is_nil(rows)
        assert.matches("larger than mysql.max_result_bytes", err)
        local ok = assert(small:query("SELECT 1 AS one"))
        assert.equal(1, ok[1].one)
        small:close()
    end)

    it("reads the first result set of a CALL and drains the others, also after a failure", function()
        local small = assert(host.db.new { pool_size = 1, max_result_bytes = 2048 })
        assert(small:exec("DROP PROCEDURE IF EXISTS spec_two_sets"))
        assert(small:exec("CREATE PROCEDURE spec_two_sets(n INT) BEGIN "
            .. "SELECT REPEAT('a', n) AS a UNION ALL SELECT REPEAT('b', n) UNION ALL SELECT REPEAT('c', n); "
            .. "SELECT 2 AS second; END"))
        local rows = assert(small:query("CALL spec_two_sets(?)", 3))
        assert.same({ { a = "aaa" }, { a = "bbb" }, { a = "ccc" } }, rows)
        assert(small:exec("CALL spec_two_sets(?)", 3))
        local none, err = small:query("CALL spec_two_sets(?)", 1000)
        assert.is_nil(none)
        assert.matches("larger than mysql.max_result_bytes", err)
        assert.equal(1, assert(small:query("SELECT 1 AS one"))[1].one) -- still in sync
        assert(small:exec("DROP PROCEDURE spec_two_sets"))
        small:close()
    end)
end)

describe("chathost migrate on several nodes (the cluster's lock row)", function()
    timeout(30000)
    local port = tostring(host.config.mysql.port)
    -- two entries: the run takes schema_migrations_lock as on a Galera cluster
    local ENV = { CHATHOST_MYSQL_NODES = "127.0.0.1:" .. port .. ",127.0.0.1:" .. port,
        CHATHOST_LOG_LEVEL = "info" }

    local function spawn_migrate()
        return assert(host.proc.spawn({ os.getenv("CHATHOST_BIN"), "migrate" },
            { stdout = "capture", stderr = "capture", env = ENV }))
    end

    local function locks()
        return count_rows(nil, "SELECT COUNT(*) AS n FROM schema_migrations_lock")
    end

    it("takes the lock row and leaves none", function()
        local p = spawn_migrate()
        assert.equal(0, p:wait(20000), select(2, p:output()))
        assert.equal(0, locks())
    end)

    it("waits while another run holds the row, then runs", function()
        assert(db.exec("INSERT INTO schema_migrations_lock (id, owner) VALUES (1, 'spec')"))
        local p = spawn_migrate()
        assert(util.wait_until(function()
            return select(2, p:output()):find("waiting for the cluster's migration lock", 1, true)
        end, 10000, "migrate waiting for the lock"))
        assert.is_false(p.exited)
        assert(db.exec("DELETE FROM schema_migrations_lock WHERE owner = 'spec'"))
        assert.equal(0, p:wait(20000), select(2, p:output()))
        assert.equal(0, locks())
    end)

    it("takes over a row older than migrations.lock_stale_s, not one just younger", function()
        local stale = host.config.migrations.lock_stale_s
        assert(db.exec("INSERT INTO schema_migrations_lock (id, owner, taken_at)"
            .. " VALUES (1, 'dead', NOW() - INTERVAL ? SECOND)", stale - 5))
        local p = spawn_migrate()
        assert(util.wait_until(function()
            return select(2, p:output()):find("waiting for the cluster's migration lock", 1, true)
        end, 10000, "migrate waiting for the lock"))
        p:kill("KILL")
        p:wait()
        assert(db.exec("UPDATE schema_migrations_lock SET taken_at = NOW() - INTERVAL ? SECOND",
            stale + 1))
        p = spawn_migrate()
        assert.equal(0, p:wait(20000), select(2, p:output()))
        assert.matches("took over a migration lock", select(2, p:output()))
        assert.equal(0, locks())
    end)
end)

-- sql_conflict_spec.lua: lib.sql runs a transaction (or one autocommit statement) again
-- when it fails with 1213, a deadlock on one server or a lost certification on Galera,
-- at most mysql.conflict_attempts times, counting each retry. Two real transactions that
-- lock two rows in opposite order make the deadlock on the private MariaDB.
local host = require "host"
local util = require "helpers.util"
local sql = dofile(host.root .. "/scripts/lib/sql.lua")
local db = host.db

local function retries()
    return tonumber(host.metrics.render():match("\nchathost_db_conflict_retries_total (%d+)")) or 0
end

describe("lib.sql conflict retries", function()
    setup(function()
        assert(db.exec("DROP TABLE IF EXISTS t_conflict"))
        assert(db.exec("CREATE TABLE t_conflict (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB"))
    end)
    teardown(function() assert(db.exec("DROP TABLE IF EXISTS t_conflict")) end)

    it("runs the deadlock victim's transaction again, and both commit", function()
        assert(db.exec("INSERT INTO t_conflict VALUES (1, 0), (2, 0)"))
        local before = retries()
        local locked, runs = {}, { a = 0, b = 0 }
        -- name locks first, then second; on its first run it waits until the other holds its
        -- first row, so the two wait for each other
        local function worker(name, first, second, other)
            return host.spawn(function()
                return sql.tx(function(q)
                    runs[name] = runs[name] + 1
                    sql.must(q.exec("UPDATE t_conflict SET n = n + 1 WHERE id = ?", first))
                    if runs[name] == 1 then
                        locked[name] = true
                        assert(util.wait_until(function() return locked[other] end, 5000))
                    end
                    sql.must(q.exec("UPDATE t_conflict SET n = n + 1 WHERE id = ?", second))
                    return name
                end)
            end)
        end
        local a, b = worker("a", 1, 2, "b"), worker("b", 2, 1, "a")
        assert.same({ true, "a" }, { a:wait() })
        assert.same({ true, "b" }, { b:wait() })
        assert.equal(3, runs.a + runs.b) -- the victim ran twice
        local rows = assert(db.query("SELECT id, n FROM t_conflict ORDER BY id"))
        assert.same({ { id = 1, n = 2 }, { id = 2, n = 2 } }, rows)
        assert.equal(before + 1, retries())
    end)

    it("gives up after mysql.conflict_attempts runs and returns the error", function()
        local before, runs = retries(), 0
        local res, err, errno = sql.retry_conflicts(function()
            runs = runs + 1
            return nil, "Deadlock found", sql.ER_LOCK_DEADLOCK
        end)
        assert.is_nil(res)
        assert.equal("Deadlock found", err)
        assert.equal(sql.ER_LOCK_DEADLOCK, errno)
        assert.equal(host.config.mysql.conflict_attempts, runs)
        assert.equal(before + runs - 1, retries())
    end)

    it("does not run again on other errors", function()
        local runs = 0
        assert.same({ nil, "Duplicate entry", sql.ER_DUP_ENTRY }, { sql.retry_conflicts(function()
            runs = runs + 1
            return nil, "Duplicate entry", sql.ER_DUP_ENTRY
        end) })
        assert.equal(1, runs)
    end)
end)

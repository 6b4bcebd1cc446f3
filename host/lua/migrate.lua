-- chathost.migrate: applies the numbered migrations in sql/ that the database does not
-- have yet (`chathost migrate`). Each file NNN_name.sql is split into statements at
-- semicolons that end a line; `--` comment lines are dropped. The table
-- schema_migrations records every applied version.
local host = require "host"

local M = {}

local function statements(sql)
    local out, cur = {}, {}
    for line in (sql .. "\n"):gmatch("([^\n]*)\n") do
        if not line:match("^%s*%-%-") then
            cur[#cur + 1] = line
            if line:match(";%s*$") then
                local stmt = table.concat(cur, "\n"):gsub(";%s*$", "")
                if stmt:match("%S") then out[#out + 1] = stmt end
                cur = {}
            end
        end
    end
    local rest = table.concat(cur, "\n")
    if rest:match("%S") then out[#out + 1] = rest end
    return out
end
M.statements = statements

-- The migrations on disk, sorted: { {version=1, name="001_init.sql", path=...}, ... }
function M.list(dir)
    if not dir then
        dir = host.config.migrations.dir
        if dir:sub(1, 1) ~= "/" then dir = host.root .. "/" .. dir end
    end
    local names, err = host.fs.list(dir)
    if not names then return nil, err end
    local out = {}
    for _, name in ipairs(names) do
        local v = name:match("^(%d+)_[%w_%-]+%.sql$")
        if v then out[#out + 1] = { version = tonumber(v), name = name, path = dir .. "/" .. name } end
    end
    table.sort(out, function(a, b) return a.version < b.version end)
    for i = 2, #out do
        if out[i].version == out[i - 1].version then
            return nil, ("%s and %s have the same version"):format(out[i - 1].name, out[i].name)
        end
    end
    return out
end

local LOCK_WAIT_S = 5     -- per GET_LOCK call: below the connection's read timeout
local LOCK_ATTEMPTS = 12  -- then give up: another migrate has held the lock for a minute

-- Serialises concurrent `chathost migrate` runs against the same database. The lock
-- belongs to db's (only) connection and goes with it.
local function lock(db)
    for _ = 1, LOCK_ATTEMPTS do
        local rows, err = db:query(
            "SELECT GET_LOCK(CONCAT('chathost_migrate:', DATABASE()), ?) AS got", LOCK_WAIT_S)
        if not rows then return nil, "cannot take the migration lock: " .. tostring(err) end
        if rows[1].got == 1 then return true end
    end
    return nil, "another chathost migrate holds the migration lock"
end

-- On a Galera cluster (mysql.nodes lists several) GET_LOCK is local to a node: runs
-- connected to two nodes would both hold it. The row of schema_migrations_lock is the
-- cluster's lock: two runs inserting it at once on two nodes cannot both commit (one gets
-- 1062 or, losing certification, 1213) and the loser waits as for GET_LOCK. A run that
-- died holding it leaves the row: taken over once it is migrations.lock_stale_s old (the
-- holder refreshes it after each statement).
local ER_DUP_ENTRY, ER_LOCK_DEADLOCK = 1062, 1213

local function cluster_lock(db, owner)
    local ok, err = db:exec([[CREATE TABLE IF NOT EXISTS schema_migrations_lock (
        id TINYINT NOT NULL PRIMARY KEY,
        owner VARCHAR(255) NOT NULL,
        taken_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4]])
    if not ok then return nil, "cannot create schema_migrations_lock: " .. tostring(err) end
    local stale, waiting = host.config.migrations.lock_stale_s, false
    for _ = 1, LOCK_ATTEMPTS * LOCK_WAIT_S do
        ok, err = db:exec("DELETE FROM schema_migrations_lock WHERE taken_at < NOW() - INTERVAL ? SECOND",
            stale)
        if ok and ok.affected > 0 then
            host.log.warn("migrate: took over a migration lock older than migrations.lock_stale_s")
        end
        local res, ierr, errno = db:exec(
            "INSERT INTO schema_migrations_lock (id, owner) VALUES (1, ?)", owner)
        if res then return true end
        if errno ~= ER_DUP_ENTRY and errno ~= ER_LOCK_DEADLOCK then
            return nil, "cannot take the cluster's migration lock: " .. tostring(ierr)
        end
        if not waiting then
            waiting = true
            host.log.info("migrate: waiting for the cluster's migration lock")
        end
        host.timer.sleep(1000)
    end
    local rows = db:query("SELECT owner, taken_at FROM schema_migrations_lock")
    local holder = rows and rows[1] and (rows[1].owner .. " since " .. rows[1].taken_at) or "?"
    return nil, "another chathost migrate holds the cluster's migration lock (" .. holder
        .. "; taken over after migrations.lock_stale_s)"
end

local function cluster_refresh(db, owner)
    db:exec("UPDATE schema_migrations_lock SET taken_at = NOW() WHERE id = 1 AND owner = ?", owner)
end

local function cluster_unlock(db, owner)
    db:exec("DELETE FROM schema_migrations_lock WHERE id = 1 AND owner = ?", owner)
end

local function apply_one(db, m, refresh)
    local sql, rerr = host.fs.read(m.path)
    if not sql then return nil, rerr end
    for i, stmt in ipairs(statements(sql)) do
        local res, serr = db:exec(stmt)
        if not res then
            -- MySQL commits DDL at once: what ran before this statement stays applied.
            local hint = i > 1 and (" (statements 1-%d of it were applied and must be undone "
                .. "by hand before retrying)"):format(i - 1) or ""
            return nil, ("%s, statement %d: %s%s"):format(m.name, i, tostring(serr), hint)
        end
        refresh()
    end
    local res, ierr = db:exec(
        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", m.version, m.name)
    if not res then return nil, ierr end
    host.log.info("applied migration " .. m.name)
    return true
end

local function apply_all(db, migrations, refresh)
    local ok, derr = db:exec([[CREATE TABLE IF NOT EXISTS schema_migrations (
        version INT NOT NULL PRIMARY KEY,
        name VARCHAR(255) NOT NULL,
        applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4]])
    if not ok then return nil, "cannot create schema_migrations: " .. tostring(derr) end
    local rows, qerr = db:query("SELECT version FROM schema_migrations")
    if not rows then return nil, qerr end
    local have = {}
    for _, r in ipairs(rows) do have[r.version] = true end
    local applied = 0
    for _, m in ipairs(migrations) do
        if not have[m.version] then
            local done, err = apply_one(db, m, refresh)
            if not done then return nil, err end
            applied = applied + 1
        end
    end
    return applied
end

-- Applies what is missing. Returns the number applied, or nil, err.
function M.apply(dir)
    local migrations, err = M.list(dir)
    if not migrations then return nil, err end
    -- One connection for the whole run, so that the lock holds across every statement;
    -- on the first live node of mysql.nodes whatever mysql.policy says (see lock).
    local db, perr = host.db.new { pool_size = 1, policy = "prefer_first" }
    if not db then return nil, perr end
    local n, aerr = lock(db)
    local cluster = #host.config_copy().mysql.nodes > 1 -- (the read-only view has no length)
    local owner = ("pid %d, %s"):format(host.proc.pid(), host.crypto.random_hex(6))
    if n and cluster then n, aerr = cluster_lock(db, owner) end
    local got_cluster = cluster and n
    if n then
        n, aerr = apply_all(db, migrations, function()
            if cluster then cluster_refresh(db, owner) end
        end)
    end
    if got_cluster then cluster_unlock(db, owner) end
    db:close() -- closing the connection releases the GET_LOCK
    return n, aerr
end

function M.main(args)
    if #args > 0 then
        io.stderr:write("chathost migrate: unexpected argument '", args[1], "'\n")
        return 2
    end
    local n, err = M.apply()
    if not n then
        host.log.error("migrate: ", err)
        return 1
    end
    host.log.info(n == 0 and "schema is up to date" or ("applied " .. n .. " migration(s)"))
    return 0
end

return M

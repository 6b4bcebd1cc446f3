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

local function apply_one(db, m)
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
    end
    local res, ierr = db:exec(
        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", m.version, m.name)
    if not res then return nil, ierr end
    host.log.info("applied migration " .. m.name)
    return true
end

local function apply_all(db, migrations)
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
            local done, err = apply_one(db, m)
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
    if n then n, aerr = apply_all(db, migrations) end
    db:close() -- closing the connection releases the lock
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

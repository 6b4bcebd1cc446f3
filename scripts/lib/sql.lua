-- lib.sql: small helpers over host.db shared by the data modules (lib.friends,
-- lib.threads, lib.messages): one statement runner for "in a transaction or on the pool",
-- and transactions that keep the MySQL error number of the statement that failed and are
-- retried when InnoDB picks them as a deadlock victim.
local host = require "host"

local M = {}

M.ER_DUP_ENTRY = 1062
M.ER_LOCK_DEADLOCK = 1213

local TX_ATTEMPTS = 3

local pool = { query = host.db.query, exec = host.db.exec }

-- on(tx?) -> runner with query(sql, ...) and exec(sql, ...) returning like host.db:
-- statements of the transaction tx, or autocommit statements on the pool.
function M.on(tx)
    if not tx then return pool end
    return {
        query = function(sql, ...) return tx:query(sql, ...) end,
        exec = function(sql, ...) return tx:exec(sql, ...) end,
    }
end

local Failure = {}
Failure.__index = Failure
Failure.__tostring = function(f) return f.err end

-- fail(err, errno): inside M.tx, ends (rolls back) the transaction; M.tx returns
-- nil, err, errno.
function M.fail(err, errno)
    error(setmetatable({ err = tostring(err), errno = errno }, Failure), 0)
end

-- must(res, err, errno) -> res, or M.fail when res is nil (a failed statement).
function M.must(res, err, errno)
    if res == nil then M.fail(err, errno) end
    return res
end

local function attempt(fn)
    local failure
    local res, err, errno = host.db.tx(function(tx)
        local ok, r = pcall(fn, M.on(tx))
        if ok then return r end
        if getmetatable(r) == Failure then failure = r end
        error(r, 0)
    end)
    if res == nil and failure then return nil, failure.err, failure.errno end
    return res, err, errno
end

-- tx(fn) -> fn's first value (true if none) after COMMIT | nil, err, errno
-- fn(runner) runs in a transaction; M.fail or any error rolls it back. A deadlock (1213)
-- is retried a few times: InnoDB rolled the victim back, a new attempt usually succeeds.
function M.tx(fn)
    local res, err, errno
    for _ = 1, TX_ATTEMPTS do
        res, err, errno = attempt(fn)
        if res ~= nil or errno ~= M.ER_LOCK_DEADLOCK then break end
        host.log.info("transaction chosen as deadlock victim, retrying")
    end
    return res, err, errno
end

-- A TIMESTAMP value as the chat wire carries it ("YYYY-MM-DD HH:MM:SS", local time).
function M.now()
    return os.date("%Y-%m-%d %H:%M:%S")
end

return M

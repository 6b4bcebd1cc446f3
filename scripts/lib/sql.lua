-- lib.sql: small helpers over host.db shared by the data modules (lib.friends,
-- lib.threads, lib.messages): transactions whose statements fail with sql.must/sql.fail,
-- keeping the MySQL error number of the statement that failed, retried when InnoDB picks
-- them as a deadlock victim or Galera's certification rejects them (both 1213).
local host = require "host"

local M = {}

M.ER_DUP_ENTRY = 1062
M.ER_LOCK_DEADLOCK = 1213

-- The runner a transaction's function gets: query(sql, ...) and exec(sql, ...) returning
-- like host.db, as statements of the transaction tx.
local function runner(tx)
    return {
        query = function(sql, ...) return tx:query(sql, ...) end,
        exec = function(sql, ...) return tx:exec(sql, ...) end,
    }
end

-- A raised failure: host.db.tx returns its err and errno; tostring gives err (a failure
-- raised outside a transaction is logged readably).
local Failure = { __tostring = function(f) return f.err end }

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

-- retry_conflicts(fn, ...) -> fn(...)'s values, fn run again while it fails with 1213 (its
-- third value): InnoDB chose it as a deadlock victim, or on Galera another node's
-- transaction won certification; either way the server rolled all of it back, so another
-- run is safe. At most mysql.conflict_attempts runs; each retry counts in
-- chathost_db_conflict_retries_total. Only for an fn that is one transaction or one
-- autocommit statement (a retry must not repeat anything that was committed).
function M.retry_conflicts(fn, ...)
    local attempts = host.config.mysql.conflict_attempts
    local res, err, errno
    for attempt = 1, attempts do
        res, err, errno = fn(...)
        if res ~= nil or errno ~= M.ER_LOCK_DEADLOCK or attempt == attempts then break end
        host.metrics.inc("chathost_db_conflict_retries_total", 1, nil,
            "transactions run again after a deadlock or a Galera certification conflict (1213)")
        host.log.info("transaction lost a deadlock or certification conflict, running it again")
    end
    return res, err, errno
end

-- tx(fn) -> fn's first value (true if none) after COMMIT | nil, err, errno
-- fn(runner) runs in a transaction; M.fail or any error rolls it back. A conflict (1213)
-- runs it again as a whole (retry_conflicts): fn must not have effects outside the
-- database that a second run would repeat.
function M.tx(fn)
    return M.retry_conflicts(host.db.tx, function(tx) return fn(runner(tx)) end)
end

-- A TIMESTAMP value as the chat wire carries it ("YYYY-MM-DD HH:MM:SS", local time).
function M.now()
    return os.date("%Y-%m-%d %H:%M:%S")
end

return M

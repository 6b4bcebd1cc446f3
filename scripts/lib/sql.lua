-- lib.sql: small helpers over host.db shared by the data modules (lib.friends,
-- lib.threads, lib.messages): transactions whose statements fail with sql.must/sql.fail,
-- keeping the MySQL error number of the statement that failed, retried when InnoDB picks
-- them as a deadlock victim.
local host = require "host"

local M = {}

M.ER_DUP_ENTRY = 1062
M.ER_LOCK_DEADLOCK = 1213

local TX_ATTEMPTS = 3

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

-- tx(fn) -> fn's first value (true if none) after COMMIT | nil, err, errno
-- fn(runner) runs in a transaction; M.fail or any error rolls it back. A deadlock (1213)
-- is retried a few times: InnoDB rolled the victim back, a new attempt usually succeeds.
function M.tx(fn)
    local res, err, errno
    for _ = 1, TX_ATTEMPTS do
        res, err, errno = host.db.tx(function(tx) return fn(runner(tx)) end)
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

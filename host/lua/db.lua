-- chathost.db: the Lua half of host.db (host/db.c). A transaction runs the caller's
-- function, which yields at every statement; LuaJIT can yield across a pcall made from
-- Lua but not from C, so db.tx and pool:tx live here, on top of db.c's begin and finish.
-- Loaded while the host table is built: it must not require "host".
local M = {}

-- Adds api.tx(fn) (the default pool) and pool_methods.tx(pool, fn).
-- begin(pool | nil) -> tx | nil, err, errno and finish(tx, commit) -> true | nil, err, errno
-- (begin may return at once, with an idle connection leased; finish yields and returns the
-- connection to the pool).
function M.install(api, pool_methods, begin, finish)
    local in_tx = setmetatable({}, { __mode = "k" }) -- coroutine -> true while it holds a tx

    local function run(pool, fn)
        if type(fn) ~= "function" then error("db.tx: expected a function", 3) end
        local co = coroutine.running()
        if co and in_tx[co] then
            error("db.tx: this coroutine is already in a transaction (db.tx does not nest; "
                .. "use the tx object you have)", 3)
        end
        local tx, err, errno = begin(pool)
        if not tx then return nil, err, errno end
        in_tx[co] = true
        local ok, result = pcall(fn, tx)
        if not ok then
            finish(tx, false)
            in_tx[co] = nil
            -- a raised {err=, errno=} (a failed statement passed on) keeps its errno
            if type(result) == "table" and result.err ~= nil then
                return nil, tostring(result.err), result.errno
            end
            return nil, tostring(result)
        end
        local committed, cerr, cerrno = finish(tx, true)
        in_tx[co] = nil
        if not committed then return nil, cerr, cerrno end
        if result == nil then return true end
        return result
    end

    -- db.tx(function(tx) ... end) -> the function's first value (true if none) after
    -- COMMIT | nil, err, errno?: the function raised (rolled back; a raised table
    -- {err=, errno=} gives its err and errno) or COMMIT failed.
    function api.tx(fn)
        local r, err, errno = run(nil, fn)
        return r, err, errno
    end

    function pool_methods.tx(pool, fn)
        if pool == nil then error("pool:tx: call it with ':'", 2) end
        local r, err, errno = run(pool, fn)
        return r, err, errno
    end
end

return M

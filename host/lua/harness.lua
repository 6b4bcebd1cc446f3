-- chathost.harness: the busted-style spec runner behind `chathost test`. Spec files are
-- loaded in a strict environment (no accidental globals) holding describe/it/pending,
-- the hooks and assert. Every test runs as its own task on the real event loop (so it may
-- call yielding host functions), under a timeout, and is checked for host resources it
-- left behind. Output: one line per failure, then exactly "N passed, N failed[, N skipped]".
local host = require "host"
local core = require "chathost.harness_core"
local fs = host.fs

local M = {}

---------------------------------------------------------------------------------------
-- Value formatting for failure messages

local function fmt(v, depth, seen)
    depth = depth or 0
    local t = type(v)
    if t == "string" then
        if #v > 200 then return string.format("%q", v:sub(1, 200)) .. "...(" .. #v .. " bytes)" end
        return string.format("%q", v)
    elseif t ~= "table" then
        if v == host.null then return "null" end
        return tostring(v)
    end
    seen = seen or {}
    if seen[v] then return "<cycle>" end
    if depth > 3 then return "{...}" end
    seen[v] = true
    local parts, n = {}, 0
    local len = #v
    for i = 1, len do
        n = n + 1
        if n > 20 then parts[#parts + 1] = "..." break end
        parts[#parts + 1] = fmt(v[i], depth + 1, seen)
    end
    local keys = {}
    for k in pairs(v) do
        if not (type(k) == "number" and k >= 1 and k <= len and k == math.floor(k)) then
            keys[#keys + 1] = k
        end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
        n = n + 1
        if n > 20 then parts[#parts + 1] = "..." break end
        local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. fmt(k) .. "]"
        parts[#parts + 1] = key .. "=" .. fmt(v[k], depth + 1, seen)
    end
    seen[v] = nil
    return "{" .. table.concat(parts, ", ") .. "}"
end
M.format = fmt

---------------------------------------------------------------------------------------
-- Assertions

local current_file -- the spec file running now, to locate failures in it

-- "file:line" of the innermost stack frame that belongs to the running spec file.
local function spec_location()
    for level = 3, 40 do
        local info = debug.getinfo(level, "Sl")
        if not info then break end
        if info.source == "@" .. current_file and info.currentline > 0 then
            return current_file .. ":" .. info.currentline
        end
    end
    return current_file or "?"
end

local function fail(msg, user_msg)
    if user_msg then msg = tostring(user_msg) .. ": " .. msg end
    error(spec_location() .. ": " .. msg, 0)
end

local function deep_equal(a, b, seen)
    if a == b then return true end
    if type(a) ~= "table" or type(b) ~= "table" then return false end
    seen = seen or {}
    if seen[a] == b then return true end
    seen[a] = b
    for k, v in pairs(a) do
        if not deep_equal(v, b[k], seen) then return false end
    end
    for k in pairs(b) do
        if a[k] == nil then return false end
    end
    return true
end
M.deep_equal = deep_equal

-- Each check returns ok, message-when-failing, message-when-failing-negated.
local checks = {}

function checks.equal(expected, actual)
    return expected == actual,
        ("expected %s, got %s"):format(fmt(expected), fmt(actual)),
        ("expected a value other than %s"):format(fmt(expected))
end

function checks.same(expected, actual)
    return deep_equal(expected, actual),
        ("expected (deep) %s, got %s"):format(fmt(expected), fmt(actual)),
        ("expected a value not the same as %s"):format(fmt(expected))
end

function checks.truthy(v)
    return not not v, ("expected a truthy value, got %s"):format(fmt(v)),
        ("expected a falsy value, got %s"):format(fmt(v))
end

function checks.falsy(v)
    return not v, ("expected a falsy value, got %s"):format(fmt(v)),
        ("expected a truthy value, got %s"):format(fmt(v))
end

function checks.is_nil(v)
    return v == nil, ("expected nil, got %s"):format(fmt(v)), "expected a value, got nil"
end

function checks.is_true(v)
    return v == true, ("expected true, got %s"):format(fmt(v)), "expected anything but true"
end

function checks.is_false(v)
    return v == false, ("expected false, got %s"):format(fmt(v)), "expected anything but false"
end

function checks.matches(pattern, s)
    local ok = type(s) == "string" and s:find(pattern) ~= nil
    return ok, ("expected %s to match pattern %s"):format(fmt(s), fmt(pattern)),
        ("expected %s not to match pattern %s"):format(fmt(s), fmt(pattern))
end

function checks.near(expected, actual, tolerance)
    local ok = type(actual) == "number" and math.abs(expected - actual) <= tolerance
    return ok, ("expected %s +/- %s, got %s"):format(fmt(expected), fmt(tolerance), fmt(actual)),
        ("expected a value farther than %s from %s"):format(fmt(tolerance), fmt(expected))
end

function checks.has_error(fn, expected)
    local ok, err = pcall(fn)
    if ok then
        return false, "expected an error, but the function returned normally", nil
    end
    if expected ~= nil then
        local s = type(err) == "string" and err or tostring(err)
        if not s:find(expected, 1, true) then
            return false, ("expected an error containing %s, got %s"):format(fmt(expected), fmt(err)), nil
        end
    end
    return true, nil, ("expected no error, got %s"):format(fmt(err))
end

local ARITY = { equal = 2, same = 2, truthy = 1, falsy = 1, is_nil = 1, is_true = 1, is_false = 1,
    matches = 2, near = 3, has_error = 2 }

local function make_assert(negate)
    local a = {}
    for name, check in pairs(checks) do
        a[name] = function(...)
            local ok, msg, negmsg = check(...)
            if negate then ok, msg = not ok, negmsg end
            if not ok then fail(msg, (select(ARITY[name] + 1, ...))) end
            return ...
        end
    end
    return a
end

local assert_pos, assert_neg = make_assert(false), make_assert(true)
local assert = setmetatable({}, {
    __call = function(_, v, msg, ...)
        if not v then fail("assertion failed" .. (msg and (": " .. tostring(msg)) or "")) end
        return v, msg, ...
    end,
    __index = function(_, k)
        if k == "are" or k == "is" or k == "has" then return assert_pos end
        if k == "are_not" or k == "is_not" or k == "has_no" then return assert_neg end
        local v = assert_pos[k]
        if v then return v end
        local neg = k:match("^not_(.+)$") or k:match("^is_not_(.+)$")
        if neg == "nil" then return assert_neg.is_nil end
        if neg and assert_neg[neg] then return assert_neg[neg] end
        if k == "errors" or k == "error" then return assert_pos.has_error end
        if k == "no_error" or k == "has_no_error" then return assert_neg.has_error end
        if k == "not_nil" then return assert_neg.is_nil end
        if k == "same_as" then return assert_pos.same end
        error("assert." .. tostring(k) .. " does not exist", 2)
    end,
})
assert_pos.is_not_nil = assert_neg.is_nil
M.assert = assert

---------------------------------------------------------------------------------------
-- The spec tree

local function new_suite(name, parent)
    return { name = name, parent = parent, children = {}, before_each = {}, after_each = {},
        setup = {}, teardown = {} }
end

local function full_name(node)
    local parts = {}
    while node and node.name do
        table.insert(parts, 1, node.name)
        node = node.parent
    end
    return table.concat(parts, " ")
end

-- -> the environment of a spec file, and a function to call once the file has run (its
-- tree is collected: timeout() is refused from then on, in test bodies)
local function spec_env(file, root)
    local cur = root
    local collecting = true
    local api = {}
    local function add_child(kind, name, fn)
        local info = debug.getinfo(3, "l")
        local node = { kind = kind, name = name, fn = fn, parent = cur,
            line = info and info.currentline or 0, file = file }
        cur.children[#cur.children + 1] = node
        return node
    end
    function api.describe(name, fn)
        if type(name) ~= "string" or type(fn) ~= "function" then
            error("describe(name, function) expected", 2)
        end
        local suite = new_suite(name, cur)
        suite.kind, suite.file = "suite", file
        cur.children[#cur.children + 1] = suite
        local saved = cur
        cur = suite
        local ok, err = pcall(fn)
        cur = saved
        if not ok then error(err, 0) end
    end
    api.context = api.describe
    function api.it(name, fn)
        if type(name) ~= "string" then error("it(name, function) expected", 2) end
        add_child(fn and "test" or "pending", name, fn)
    end
    function api.pending(name) add_child("pending", name or "pending") end
    function api.before_each(fn) cur.before_each[#cur.before_each + 1] = fn end
    function api.after_each(fn) cur.after_each[#cur.after_each + 1] = fn end
    function api.setup(fn) cur.setup[#cur.setup + 1] = fn end
    function api.teardown(fn) cur.teardown[#cur.teardown + 1] = fn end
    -- timeout(ms): the time each test, hook and setup/teardown of this describe (and the
    -- ones inside it; at the top of a file: the whole file) may take, instead of
    -- test.timeout_ms, for specs that wait on something slow by nature (a whole system
    -- starting up)
    function api.timeout(ms)
        if not collecting then error("timeout(ms) belongs in a describe, not in a test", 2) end
        if type(ms) ~= "number" or ms < 1 or ms ~= math.floor(ms) then
            error("timeout(ms): a positive whole number of milliseconds expected", 2)
        end
        cur.timeout_ms = ms
    end
    api.lazy_setup, api.lazy_teardown = api.setup, api.teardown
    api.strict_setup, api.strict_teardown = api.setup, api.teardown
    api.assert = assert
    api.spec_file = file

    return setmetatable(api, {
        __index = function(_, k)
            local v = _G[k]
            if v == nil then error("undefined global '" .. tostring(k) .. "'", 2) end
            return v
        end,
        __newindex = function(_, k)
            error("assignment to undeclared global '" .. tostring(k) .. "' (declare it local)", 2)
        end,
    }), function() collecting = false end
end

---------------------------------------------------------------------------------------
-- Running

local Runner = {}
Runner.__index = Runner

function Runner:out(...)
    io.stdout:write(...)
    io.stdout:flush()
end

-- First line(s) of an error, without the traceback unless --verbose.
function Runner:short(err)
    err = tostring(err)
    if self.verbose then return err end
    local cut = err:find("\nstack traceback:", 1, true)
    if cut then err = err:sub(1, cut - 1) end
    return err
end

function Runner:failure(where, name, err)
    self.failed = self.failed + 1
    self:out(("FAIL %s: %s: %s\n"):format(where, name, self:short(err)))
end

-- The timeout of the tests and hooks of suite: its own timeout(ms), else the nearest
-- enclosing one's, else test.timeout_ms.
function Runner:timeout_of(suite)
    local node = suite
    while node do
        if node.timeout_ms then return node.timeout_ms end
        node = node.parent
    end
    return self.timeout_ms
end

local function chain(suite, field, outer_first)
    local list = {}
    local node = suite
    while node do
        local hooks = node[field]
        if outer_first then
            for i = #hooks, 1, -1 do table.insert(list, 1, hooks[i]) end
        else
            for i = 1, #hooks do list[#list + 1] = hooks[i] end
        end
        node = node.parent
    end
    return list
end

function Runner:matches(node)
    if not self.filter then return true end
    return full_name(node):find(self.filter) ~= nil
end

function Runner:suite_has_tests(suite)
    for _, c in ipairs(suite.children) do
        if c.kind == "suite" then
            if self:suite_has_tests(c) then return true end
        elseif self:matches(c) then
            return true
        end
    end
    return false
end

function Runner:run_test(node)
    local name = full_name(node)
    local where = node.file .. ":" .. node.line
    if node.kind == "pending" then
        self.skipped = self.skipped + 1
        if self.verbose then self:out(("skip %s\n"):format(name)) end
        return
    end
    local befores = chain(node.parent, "before_each", true)
    local afters = chain(node.parent, "after_each", false)
    local body = function()
        for _, h in ipairs(befores) do h() end
        node.fn()
    end
    local mark = core.mark()
    local t0 = host.timer.monotonic()
    local timeout = self:timeout_of(node.parent)
    local ok, err = core.run(body, timeout)
    -- after_each hooks run in tasks of their own, so they clean up after a timeout too
    for _, h in ipairs(afters) do
        local ok2, err2 = core.run(h, timeout)
        if ok and not ok2 then ok, err = false, err2 end
    end
    local left = core.leftovers(mark, true)
    local ms = host.timer.monotonic() - t0
    local parts = {}
    for kind, count in pairs(left) do parts[#parts + 1] = count .. " " .. kind .. (count > 1 and "s" or "") end
    if ok and #parts > 0 then
        table.sort(parts)
        ok, err = false, "left behind " .. table.concat(parts, ", ") ..
            " after the test ended (closed by the harness)"
    end
    if ok then
        self.passed = self.passed + 1
        if self.verbose then self:out(("ok   %s (%d ms)\n"):format(name, ms)) end
    else
        self:failure(where, name, err)
    end
end

function Runner:run_hooks(suite, field)
    for _, h in ipairs(suite[field]) do
        local ok, err = core.run(h, self:timeout_of(suite))
        if not ok then return false, err end
    end
    return true
end

function Runner:run_suite(suite)
    if not self:suite_has_tests(suite) then return end
    local mark = core.mark()
    local ok, err = self:run_hooks(suite, "setup")
    if not ok then
        self:failure(suite.file .. ":" .. (suite.line or 0), full_name(suite) .. " (setup)", err)
    else
        for _, c in ipairs(suite.children) do
            if c.kind == "suite" then
                self:run_suite(c)
            elseif self:matches(c) then
                self:run_test(c)
            end
        end
    end
    local tok, terr = self:run_hooks(suite, "teardown")
    if not tok then
        self:failure(suite.file .. ":" .. (suite.line or 0), full_name(suite) .. " (teardown)", terr)
    end
    core.leftovers(mark, true)
end

function Runner:list_suite(suite)
    for _, c in ipairs(suite.children) do
        if c.kind == "suite" then
            self:list_suite(c)
        elseif self:matches(c) then
            self:out(("%s:%d: %s\n"):format(c.file, c.line, full_name(c)))
        end
    end
end

-- Specs require their helpers relative to their own folder ("helpers.util" from tests/).
local function add_search_dir(dir)
    local entry = dir .. "/?.lua;"
    if not package.path:find(entry, 1, true) then package.path = entry .. package.path end
end

function Runner:run_file(file)
    current_file = file
    add_search_dir(file:match("^(.*)/[^/]*$") or ".")
    local chunk, err = loadfile(file)
    if not chunk then
        self:failure(file, "(loading the spec file)", err)
        return
    end
    local root = new_suite(nil, nil)
    root.file, root.line = file, 0
    local env, collected = spec_env(file, root)
    setfenv(chunk, env)
    local ok, lerr = pcall(chunk)
    collected()
    if not ok then
        self:failure(file, "(running the spec file)", lerr)
        return
    end
    if self.list then
        self:list_suite(root)
    else
        self:run_suite(root)
    end
end

local function collect(path, out)
    local kind = fs.kind(path)
    if kind == "directory" then
        local names = fs.list(path)
        table.sort(names)
        for _, name in ipairs(names) do
            local full = path .. "/" .. name
            local k = fs.kind(full)
            if k == "directory" then
                if name ~= "fixtures" then collect(full, out) end
            elseif name:match("_spec%.lua$") then
                out[#out + 1] = full
            end
        end
    elseif kind == "file" then
        out[#out + 1] = path
    else
        return nil, path .. ": no such file or directory"
    end
    return out
end

local USAGE = "usage: chathost test [-c config.lua] [--filter PATTERN] [--verbose] [--list] [paths...]"

-- Runs the specs named by args; returns the process exit status.
function M.main(args)
    local r = setmetatable({ passed = 0, failed = 0, skipped = 0, paths = {},
        timeout_ms = host.config.test.timeout_ms }, Runner)
    local i = 1
    while i <= #args do
        local a = args[i]
        if a == "--filter" then
            i = i + 1
            r.filter = args[i]
            if not r.filter then io.stderr:write(USAGE, "\n") return 2 end
        elseif a == "--verbose" or a == "-v" then
            r.verbose = true
        elseif a == "--list" then
            r.list = true
        elseif a:sub(1, 1) == "-" then
            io.stderr:write("chathost test: unknown option ", a, "\n", USAGE, "\n")
            return 2
        else
            r.paths[#r.paths + 1] = a
        end
        i = i + 1
    end
    if #r.paths == 0 then r.paths[1] = host.root .. "/tests" end
    package.path = host.root .. "/tests/?.lua;" .. package.path

    local files = {}
    for _, p in ipairs(r.paths) do
        local ok, err = collect(p, files)
        if not ok then io.stderr:write("chathost test: ", err, "\n") return 2 end
    end
    for _, f in ipairs(files) do r:run_file(f) end
    if r.list then return 0 end
    local line = ("%d passed, %d failed"):format(r.passed, r.failed)
    if r.skipped > 0 then line = line .. (", %d skipped"):format(r.skipped) end
    r:out(line, "\n")
    return r.failed > 0 and 1 or 0
end

return M

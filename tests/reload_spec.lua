-- Hot reload: a role's scripts are loaded by generation; a new generation replaces the old
-- only when all of it loads; timers and coroutines started by an old generation survive.
local host = require "host"
local util = require "helpers.util"

local function scripts(v, extra)
    return {
        ["demo/init.lua"] = [[
local util = require "lib.util"
local M = {}
function M.value() return util.v end
function M.kind() return "demo" end
return M
]] .. (extra or ""),
        ["lib/util.lua"] = "return { v = " .. v .. " }\n",
    }
end

describe("script reload", function()
    local dir, loader

    before_each(function()
        dir = assert(host.fs.mkdtemp("reload"))
        util.write_tree(dir, scripts(1))
        loader = assert(host.scripts.open { dir = dir, role = "demo", debounce_ms = 20 })
    end)

    after_each(function()
        loader:close()
        host.fs.rmtree(dir)
    end)

    local function wait_generation(g)
        return assert(util.wait_until(function() return loader:stats().generation >= g end,
            5000, "generation " .. g))
    end

    local function wait_failures(n)
        return assert(util.wait_until(function() return loader:stats().failures >= n end,
            5000, n .. " failed reloads"))
    end

    it("loads the role's init.lua and the lib modules it requires", function()
        assert.equal(1, loader:handlers().value())
        assert.equal(1, loader:stats().generation)
    end)

    it("gives every generation the same host.kept table, and a module local anew", function()
        local keeper = [[
local host = require "host"
local kept, here = host.kept("reload_spec.counter"), {}
return { bump = function()
    kept.n = (kept.n or 0) + 1
    here.n = (here.n or 0) + 1
    return kept.n, here.n
end }
]]
        util.write_tree(dir, { ["lib/keeper.lua"] = keeper, ["demo/init.lua"] =
            "local k = require 'lib.keeper'\nreturn { bump = k.bump, v = 1 }\n" })
        wait_generation(2)
        assert.same({ 1, 1 }, { loader:handlers().bump() })
        assert.same({ 2, 2 }, { loader:handlers().bump() })
        util.write_tree(dir, { ["demo/init.lua"] =
            "local k = require 'lib.keeper'\nreturn { bump = k.bump, v = 2 }\n" })
        wait_generation(3)
        assert.same({ 3, 1 }, { loader:handlers().bump() })
        assert.is_not.equal(host.kept("reload_spec.counter"), host.kept("reload_spec.other"))
    end)

    it("picks up a changed module on disk without a restart", function()
        util.write_tree(dir, { ["lib/util.lua"] = "return { v = 2 }\n" })
        wait_generation(2)
        assert.equal(2, loader:handlers().value())
    end)

    it("keeps the old generation when a script has a syntax error, naming file and line", function()
        util.write_tree(dir, { ["lib/util.lua"] = "return { v = \n\n 2 +* }\n" })
        wait_failures(1)
        assert.equal(1, loader:handlers().value())
        assert.matches("lib/util%.lua:3:", loader:stats().last_error)
        assert.equal(1, loader:stats().generation)
        -- fixing it brings the new code in
        util.write_tree(dir, { ["lib/util.lua"] = "return { v = 3 }\n" })
        wait_generation(2)
        assert.equal(3, loader:handlers().value())
        assert.equal("", loader:stats().last_error)
    end)

    it("keeps the old generation when a module raises while loading", function()
        util.write_tree(dir, { ["lib/util.lua"] = "local x = nil\nreturn { v = x.y }\n" })
        wait_failures(1)
        assert.equal(1, loader:handlers().value())
        assert.matches("lib/util%.lua:2:", loader:stats().last_error)
    end)

    it("keeps the old generation when init.lua does not return a table", function()
        util.write_tree(dir, { ["demo/init.lua"] = "return 42\n" })
        wait_failures(1)
        assert.equal(1, loader:handlers().value())
        assert.matches("must return a table", loader:stats().last_error)
    end)

    it("refuses scripts that assign globals", function()
        util.write_tree(dir, { ["lib/util.lua"] = "counter = 1\nreturn { v = 5 }\n" })
        wait_failures(1)
        assert.matches("lib/util%.lua:1: assignment to global 'counter'", loader:stats().last_error)
        assert.equal(1, loader:handlers().value())
    end)

    it("keeps a timer started by the old generation firing after a reload", function()
        local old = loader:handlers()
        local seen = {}
        local t = host.timer.every(5, function() seen[#seen + 1] = old.value() end)
        util.write_tree(dir, { ["lib/util.lua"] = "return { v = 2 }\n" })
        wait_generation(2)
        local n = #seen
        assert(util.wait_until(function() return #seen >= n + 3 end, 2000, "timer ticks"))
        t:stop()
        assert.equal(1, seen[#seen]) -- the old generation's code, still alive
        assert.equal(2, loader:handlers().value())
    end)

    it("lets a coroutine that was waiting during the reload finish with its code", function()
        local h = host.spawn(function()
            local mod = loader:handlers()
            host.timer.sleep(100)
            return mod.value()
        end)
        util.write_tree(dir, { ["lib/util.lua"] = "return { v = 2 }\n" })
        wait_generation(2)
        assert.same({ true, 1 }, { h:wait() })
    end)

    it("validates the handler table with the role's validator", function()
        local l2 = assert(host.scripts.open { dir = dir, role = "demo", watch = false,
            validate = function(h)
                if type(h.kind) ~= "function" then return nil, "kind() is missing" end
                return true
            end })
        util.write_tree(dir, { ["demo/init.lua"] = "return { value = function() return 0 end }\n" })
        local g, err = l2:reload()
        assert.is_nil(g)
        assert.matches("kind%(%) is missing", err)
        l2:close()
    end)

    it("reloads on SIGHUP", function()
        local l2 = assert(host.scripts.open { dir = dir, role = "demo", watch = false })
        util.write_tree(dir, { ["lib/util.lua"] = "return { v = 7 }\n" })
        assert(host.proc.signal(host.proc.pid(), "HUP"))
        assert(util.wait_until(function() return l2:handlers().value() == 7 end, 5000, "SIGHUP reload"))
        l2:close()
    end)

    it("reports a missing role folder", function()
        local l2, err = host.scripts.open { dir = dir, role = "nope", watch = false }
        assert.is_nil(l2)
        assert.matches("nope/init.lua: no such file", err)
    end)
end)

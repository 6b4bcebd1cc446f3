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

    it("gives host.keep(name)'s table to every generation, where a module local starts over", function()
        util.write_tree(dir, { ["lib/count.lua"] = [[
local host = require "host"
local kept = host.keep("spec.count")
local M = { local_count = 0 }
function M.bump()
    kept.n = (kept.n or 0) + 1
    M.local_count = M.local_count + 1
    return kept.n, M.local_count
end
return M
]], ["demo/init.lua"] = 'return { bump = require("lib.count").bump, v = 1 }\n' })
        wait_generation(2)
        assert.same({ 1, 1 }, { loader:handlers().bump() })
        assert.same({ 2, 2 }, { loader:handlers().bump() })
        util.write_tree(dir, { ["demo/init.lua"] = 'return { bump = require("lib.count").bump, v = 2 }\n' })
        wait_generation(3)
        assert.same({ 3, 1 }, { loader:handlers().bump() }) -- the kept count goes on
        assert.has_error(function() host.keep(42) end, "host.keep(name): name must be a non-empty string")
    end)

    it("picks up a changed module on disk without a restart", function()
        util.write_tree(dir, { ["lib/util.lua"] = "return { v = 2 }\n" })
        wait_generation(2)
        assert.equal(2, loader:handlers().value())
    end)

    it("builds an unchanged module afresh in the new generation, with the new code it requires", function()
        util.write_tree(dir, { ["lib/util.lua"] = "local n = 0\nreturn { v = 1, next = function() n = n + 1 return n end }\n",
            ["lib/other.lua"] = "return { w = 1 }\n",
            ["demo/init.lua"] = "local util, other = require 'lib.util', require 'lib.other'\n"
                .. "return { value = function() return util.v end, util = util, w = function() return other.w end }\n" })
        wait_generation(2)
        local old = loader:handlers()
        assert.equal(1, old.util.next())
        assert.equal(2, old.util.next())
        util.write_tree(dir, { ["lib/other.lua"] = "return { w = 2 }\n" })
        wait_generation(3)
        local new = loader:handlers()
        assert.equal(1, new.util.next()) -- lib/util.lua did not change: its state is new all the same
        assert.equal(3, old.util.next()) -- the old generation's is its own
        assert.equal(2, new.w())
        assert.equal(1, old.w())
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

    it("keeps the old generation when a module returns nothing (a save caught half-written)", function()
        util.write_tree(dir, { ["lib/util.lua"] = "" })
        wait_failures(1)
        assert.equal(1, loader:handlers().value())
        assert.matches("lib/util%.lua: returned nothing", loader:stats().last_error)
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

    it("makes one reload of several quick saves, naming each changed file once", function()
        assert(host.fs.write(dir .. "/lib/util.lua", "return { v = 2 }\n"))
        assert(host.fs.write(dir .. "/demo/init.lua", scripts(3)["demo/init.lua"]))
        assert(host.fs.write(dir .. "/lib/util.lua", "return { v = 3 }\n"))
        wait_generation(2)
        assert.equal(3, loader:handlers().value())
        assert.equal(1, loader:stats().reloads)
        assert.equal("changed: lib/util.lua, demo/init.lua", loader:stats().changed)
    end)

    it("lists at most 8 changed files in a reload's log line and counts the rest", function()
        for i = 1, 10 do assert(host.fs.write(("%s/lib/m%02d.lua"):format(dir, i), "return {}\n")) end
        wait_generation(2)
        assert.equal("changed: lib/m01.lua, lib/m02.lua, lib/m03.lua, lib/m04.lua, lib/m05.lua, "
            .. "lib/m06.lua, lib/m07.lua, lib/m08.lua and 2 more", loader:stats().changed)
    end)

    it("ignores editors' temp and backup files, and lists a script saved by rename", function()
        for _, name in ipairs { "lib/4913", "lib/util.lua~", "lib/.util.lua.swp" } do
            assert(host.fs.write(dir .. "/" .. name, "x"))
        end
        assert(util.wait_until(function() return loader:stats().ignored >= 3 end, 5000,
            "three ignored changes"))
        assert.equal(1, loader:stats().generation)
        assert.equal(0, loader:stats().reloads)
        -- an atomic save: a temp file renamed over the script
        assert(host.fs.write(dir .. "/lib/util.lua.tmp", "return { v = 4 }\n"))
        assert(os.rename(dir .. "/lib/util.lua.tmp", dir .. "/lib/util.lua"))
        wait_generation(2)
        assert.equal(4, loader:handlers().value())
        assert.equal("changed: lib/util.lua", loader:stats().changed)
    end)

    it("logs which files a reload picked up", function()
        local p = assert(host.proc.spawn({ util.bin(), "exec",
            host.root .. "/tests/fixtures/reload/watch.lua", dir, "2" },
            { stdout = "capture", stderr = "capture", env = { CHATHOST_LOG_LEVEL = "info" } }))
        assert(util.wait_until(function() return (p:output()):find("watching", 1, true) end,
            5000, "the watcher"))
        -- one file: a second one could reach the other process after its debounce
        assert(host.fs.write(dir .. "/lib/util.lua", "return { v = 2 }\n"))
        assert.equal(0, p:wait(10000))
        local _, err = p:output()
        assert.matches("INFO  exec scripts reloaded %(changed: lib/util%.lua%): "
            .. "[^\n]*/demo generation 2, loaded in [%d.]+ ms\n", err)
    end)

    it("defaults scripts.reload_debounce_ms to 20", function()
        local cfg = dir .. "/config.lua"
        assert(host.fs.write(cfg, "return {}\n"))
        local r = util.chathost({ "config", "scripts.reload_debounce_ms", "-c", cfg })
        assert.equal("20\n", r.stdout)
    end)

    it("reports a missing role folder", function()
        local l2, err = host.scripts.open { dir = dir, role = "nope", watch = false }
        assert.is_nil(l2)
        assert.matches("nope/init.lua: no such file", err)
    end)

    -- make asan: LeakSanitizer fails the run if the loader was allocated before the option
    -- that raised was read.
    it("raises on a bad option without leaking a loader", function()
        local ok, err = pcall(host.scripts.open, { dir = dir, role = "demo", debounce_ms = "soon" })
        assert.is_false(ok)
        assert.matches("number expected", err)
    end)
end)

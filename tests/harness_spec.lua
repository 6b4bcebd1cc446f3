-- The spec harness itself: failures are reported with their line, broken spec files are
-- reported and do not stop the run, hung tests time out, leaks are reported.
local host = require "host"
local util = require "helpers.util"

local FIX = host.root .. "/tests/fixtures/harness/"

local function run(args)
    local env = { CHATHOST_LOG_LEVEL = "off" }
    return util.chathost(args, { env = env, timeout_ms = 20000 })
end

describe("the test harness", function()
    local res

    setup(function()
        -- a short per-test timeout keeps the "hangs" fixture quick
        local dir = assert(host.fs.mkdtemp("harness"))
        assert(host.fs.write(dir .. "/config.lua", "return { test = { timeout_ms = 300 } }"))
        res = run({ "test", "-c", dir .. "/config.lua", FIX .. "mixed.lua",
            FIX .. "syntax_error.lua", FIX .. "second.lua" })
        host.fs.rmtree(dir)
    end)

    it("ends with exactly 'N passed, N failed, N skipped' and a failing status", function()
        local last = res.stdout:match("([^\n]*)\n$")
        assert.equal("4 passed, 8 failed, 1 skipped", last)
        assert.equal(1, res.code)
    end)

    it("reports a failing assert with its file, line, expected and actual", function()
        assert.matches('mixed%.lua:11: expected "expected", got "actual"', res.stdout)
        assert.matches("mixed%.lua:15: expected %(deep%) {a=1, b={2}}, got {a=1, b={3}}", res.stdout)
    end)

    it("reports errors, accidental globals, timeouts and leaks as failures", function()
        assert.matches("fixture raises an error: [^\n]*mixed%.lua:19: plain error", res.stdout)
        assert.matches("assignment to undeclared global 'leaked_global'", res.stdout)
        assert.matches("fixture hangs: timeout: the test did not finish within 300 ms", res.stdout)
        assert.matches("fixture leaves a timer behind: left behind 1 timer", res.stdout)
        assert.matches("fixture leaves a process behind: left behind 1 process", res.stdout)
    end)

    it("reports a spec file with a syntax error and goes on with the next file", function()
        assert.matches("FAIL [^\n]*syntax_error%.lua: %(loading the spec file%): [^\n]*syntax_error%.lua:3:",
            res.stdout)
        assert.is_nil(res.stdout:find("never runs", 1, true))
    end)

    it("filters tests by name and lists them without running", function()
        local r = run({ "test", "--filter", "still runs", FIX .. "second.lua" })
        assert.equal(0, r.code)
        assert.matches("1 passed, 0 failed\n$", r.stdout)
        local l = run({ "test", "--list", FIX .. "second.lua" })
        assert.equal(0, l.code)
        assert.matches("second%.lua:2: second file still runs after a broken file\n", l.stdout)
        assert.matches("second%.lua:3: second file is filtered\n", l.stdout)
    end)

    it("gives the tests and hooks of a describe the timeout it sets", function()
        local dir = assert(host.fs.mkdtemp("harness"))
        assert(host.fs.write(dir .. "/config.lua", "return { test = { timeout_ms = 300 } }"))
        local r = run({ "test", "-c", dir .. "/config.lua", FIX .. "timeouts.lua" })
        host.fs.rmtree(dir)
        assert.matches("^FAIL [^\n]*timeouts%.lua:15: fixture without still times out: "
            .. "timeout: the test did not finish within 300 ms\nFAIL [^\n]*timeouts%.lua:19: fixture "
            .. "misplacing timeout calls it in a test: [^\n]*timeout%(ms%) belongs in a describe, not in "
            .. "a test\n2 passed, 2 failed\n$", r.stdout)
    end)

    it("exits 2 with a usage line for an unknown option or a missing path", function()
        local r = run({ "test", "--bogus" })
        assert.equal(2, r.code)
        assert.matches("unknown option %-%-bogus", r.stderr)
        local r2 = run({ "test", FIX .. "does_not_exist.lua" })
        assert.equal(2, r2.code)
        assert.matches("does_not_exist%.lua: no such file or directory", r2.stderr)
    end)
end)

describe("assertions", function()
    it("compare deeply and report both sides", function()
        assert.same({ 1, { x = "y" } }, { 1, { x = "y" } })
        local ok, err = pcall(assert.same, { 1 }, { 2 })
        assert.is_false(ok)
        assert.matches("expected %(deep%) {1}, got {2}", err)
    end)

    it("support negation, near, matches and has_error", function()
        assert.are_not.equal(1, 2)
        assert.is_not.same({ 1 }, { 2 })
        assert.not_nil(0)
        assert.near(1.0, 1.05, 0.1)
        assert.matches("^ab", "abc")
        assert.has_error(function() error("specific message") end, "specific")
        local ok = pcall(assert.has_error, function() end)
        assert.is_false(ok)
        local ok2 = pcall(assert.near, 1, 2, 0.5)
        assert.is_false(ok2)
    end)

    it("include the caller's message when given", function()
        local ok, err = pcall(assert.equal, 1, 2, "the counter")
        assert.is_false(ok)
        assert.matches("the counter: expected 1, got 2", err)
    end)
end)

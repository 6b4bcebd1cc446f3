-- host.proc: child processes on the loop, for tests and tools.
local host = require "host"

describe("child processes", function()
    it("runs a command and captures its output and exit status", function()
        local r = assert(host.proc.run({ "sh", "-c", "echo out; echo err >&2; exit 3" }))
        assert.equal(3, r.code)
        assert.equal(0, r.signal)
        assert.equal("out\n", r.stdout)
        assert.equal("err\n", r.stderr)
    end)

    it("passes environment changes and removes variables set to false", function()
        local r = assert(host.proc.run({ "sh", "-c", 'echo "$A:${HOME:-unset}"' },
            { env = { A = "1", HOME = false } }))
        assert.equal("1:unset\n", r.stdout)
    end)

    it("bounds captured output", function()
        local r = assert(host.proc.run({ "sh", "-c", "head -c 100000 /dev/zero" }, { max_output = 1000 }))
        assert.equal(1000, #r.stdout)
    end)

    it("kills a command that outlives its timeout", function()
        local r, err = host.proc.run({ "sleep", "10" }, { timeout_ms = 50 })
        assert.is_nil(r)
        assert.equal("timeout", err)
    end)

    it("signals a running process and reports the signal", function()
        local p = assert(host.proc.spawn({ "sleep", "10" }))
        assert.truthy(p.pid > 0)
        assert.is_nil(p:wait(10))
        assert(p:kill("TERM"))
        local code, sig = p:wait()
        assert.equal(15, sig)
        assert.is_true(p.exited)
        local ok, err = p:kill()
        assert.is_nil(ok)
        assert.equal("process has exited", err)
    end)

    it("gives children no descriptors beyond stdio (no Redis or MySQL sockets)", function()
        assert(host.redis.call("PING"))
        assert(host.db.query("SELECT 1 AS one"))
        local r = assert(host.proc.run({ "sh", "-c", "ls /proc/$$/fd" }))
        local fds = {}
        for fd in r.stdout:gmatch("%d+") do fds[#fds + 1] = tonumber(fd) end
        table.sort(fds)
        -- 0..2, and the descriptor the shell's ls reads the folder with (3 or above once)
        assert.truthy(#fds <= 4, r.stdout)
        for i = 1, 3 do assert.equal(i - 1, fds[i]) end
    end)

    -- Under the ASan build (make asan), LeakSanitizer fails the run if an argument error
    -- leaves what spawn had allocated behind: options are checked before anything is.
    it("raises on bad options without leaking what it had built", function()
        local ok, err = pcall(host.proc.spawn, { "true" }, { stdout = "bogus" })
        assert.is_false(ok)
        assert.matches("opts.stdout must be inherit, capture or null", err)
        ok, err = pcall(host.proc.spawn, { "true" }, { max_output = "lots" })
        assert.is_false(ok)
        ok, err = pcall(host.proc.spawn, { "true" }, { env = "A=1" })
        assert.is_false(ok)
        assert.matches("table expected", err)
        ok, err = pcall(host.proc.spawn, { "true", {} })
        assert.is_false(ok)
        assert.matches("non%-empty array of strings", err)
    end)

    it("reports a command that cannot start", function()
        local p, err = host.proc.spawn({ "/nonexistent/binary" })
        assert.is_nil(p)
        assert.matches("cannot start /nonexistent/binary", err)
    end)
end)

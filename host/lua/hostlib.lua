-- chathost.hostlib: the parts of the host API written in Lua on top of the C modules.
-- Loaded once at start-up; adds functions to the `host` table.
local host = require "host"

-- host.proc.run(argv, opts) -> {code=, signal=, stdout=, stderr=} | nil, err
-- Runs a command to completion, capturing its output; opts.timeout_ms (default 30 s)
-- kills it with SIGKILL when exceeded and returns nil, "timeout".
function host.proc.run(argv, opts)
    opts = opts or {}
    local o = { stdout = opts.stdout or "capture", stderr = opts.stderr or "capture",
        env = opts.env, cwd = opts.cwd, max_output = opts.max_output }
    local p, err = host.proc.spawn(argv, o)
    if not p then return nil, err end
    local code, sig = p:wait(opts.timeout_ms or 30000)
    if not code then
        p:kill("KILL")
        p:wait()
        return nil, "timeout"
    end
    local out, errout = p:output()
    return { code = code, signal = sig, stdout = out, stderr = errout }
end

-- host.keep(name) -> table: the same table for name in every script generation, for the
-- life of the process: state that must outlive a hot reload (which loads every module
-- afresh) lives there, not in a module local. Gone at a restart, and each process has its
-- own (shared state belongs in Redis or MySQL). name is a string: "status.probes".
local kept = {}
function host.keep(name)
    if type(name) ~= "string" or name == "" then
        error("host.keep(name): name must be a non-empty string", 2)
    end
    local t = kept[name]
    if not t then
        t = {}
        kept[name] = t
    end
    return t
end

return true

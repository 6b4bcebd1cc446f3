-- helpers.roles: start real role processes (`chathost status`, ...) for specs, each with a
-- config of its own in a temporary folder (Redis and MySQL addresses come from the
-- environment `make test` exports), on free ports, optionally with a private copy of
-- scripts/ that the spec may edit.
local host = require "host"
local util = require "helpers.util"

local M = {}
M.__index = M

-- Lua source for a plain table (strings, numbers, booleans, nested tables).
local function serialize(v, indent)
    indent = indent or ""
    if type(v) == "string" then return string.format("%q", v) end
    if type(v) ~= "table" then return tostring(v) end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local out = { "{\n" }
    for _, k in ipairs(keys) do
        local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. serialize(k) .. "]"
        out[#out + 1] = indent .. "  " .. key .. " = " .. serialize(v[k], indent .. "  ") .. ",\n"
    end
    out[#out + 1] = indent .. "}"
    return table.concat(out)
end
M.serialize = serialize
-- Not JIT-compiled: Debian 12's LuaJIT (2.1.0-beta3+git20220320) has LuaJIT issue #827,
-- a nested pairs() loop whose trace is blacklisted can end early. Compiled, this recursive
-- serializer (hot after a suite's many role starts) wrote a chat server's instance as {}
-- now and then (its ports gone: the server took 8090 and the spec could not connect),
-- in about half the runs of chat_server, chat_text and chat_frames specs in that order;
-- with the JIT off for it, 8 of 8 clean.
require("jit").off(serialize, true)

-- free_port() -> a port of 20000-31999 (below Linux's ephemeral range) that this process
-- has not handed out before. A spec that takes a dozen ports at once (make_run_spec: 16)
-- drew two equal ones about once in a hundred runs when the draw was the whole check. A
-- port another process listens on is found by the role that cannot bind it (roles.start
-- tries another).
local given = {}

function M.free_port()
    for _ = 1, 1000 do
        local port = 20000 + host.crypto.random_uniform(12000)
        if not given[port] then
            given[port] = true
            return port
        end
    end
    error("no free port in 20000-31999")
end

-- Copies the repository's scripts/ into dir/scripts and returns that path.
function M.copy_scripts(dir)
    local r = assert(host.proc.run({ "cp", "-r", host.root .. "/scripts", dir .. "/scripts" }))
    assert(r.code == 0, r.stderr)
    return dir .. "/scripts"
end

-- start{role=, name=?, config=function(port) -> table, copy_scripts=?, edit=function(dir)?,
--       env=?, ready=pattern?, prefix=argv?}  (edit changes the private scripts copy before
--       the start; prefix goes before the command, e.g. {"ip", "netns", "exec", ns})
-- The config function gets a fresh free port (retried if the role cannot bind it or the
-- config already uses it).
function M.start(opts)
    local dir = assert(host.fs.mkdtemp("role"))
    local scripts = opts.copy_scripts and M.copy_scripts(dir) or (host.root .. "/scripts")
    if opts.edit then opts.edit(scripts) end
    for _ = 1, 5 do
        local port = M.free_port()
        local cfg = opts.config(port)
        cfg.scripts = cfg.scripts or {}
        cfg.scripts.dir = scripts
        cfg.scripts.reload_debounce_ms = cfg.scripts.reload_debounce_ms or 20
        local path = dir .. "/config.lua"
        assert(host.fs.write(path, "return " .. serialize(cfg) .. "\n"))
        local argv = {}
        for _, a in ipairs(opts.prefix or {}) do argv[#argv + 1] = a end
        for _, a in ipairs({ util.bin(), opts.role, "-c", path }) do argv[#argv + 1] = a end
        if opts.name then argv[#argv + 1] = "--name" argv[#argv + 1] = opts.name end
        local env = { CHATHOST_LOG_LEVEL = "info" }
        for k, v in pairs(opts.env or {}) do env[k] = v end
        local p = assert(host.proc.spawn(argv, { stdout = "capture", stderr = "capture", env = env }))
        local self = setmetatable({ proc = p, port = port, dir = dir, scripts = scripts,
            config_path = path }, M)
        local ok, why = self:await(opts.ready or "started;", 10000)
        if ok then return self end
        p:kill("KILL")
        p:wait()
        local _, err = p:output()
        -- a port taken, or named by the config for something else (Redis, MariaDB)
        if not err:find("cannot listen", 1, true) and not err:find("is already used by", 1, true) then
            error("role " .. opts.role .. " did not start: " .. tostring(why) .. "\n" .. err
                .. "with the config " .. path .. ":\n" .. tostring(host.fs.read(path)))
        end
    end
    error("no free port for role " .. opts.role)
end

-- Waits until the process's log contains pattern (plain text); false if it exited first.
function M:await(pattern, timeout_ms)
    local deadline = host.timer.monotonic() + (timeout_ms or 5000)
    repeat
        local _, err = self.proc:output()
        if err:find(pattern, 1, true) then return true end
        if self.proc.exited then return false, "exited" end
        host.timer.sleep(20)
    until host.timer.monotonic() > deadline
    return false, "timed out waiting for '" .. pattern .. "'"
end

function M:log()
    local _, err = self.proc:output()
    return err
end

-- Stops the process (SIGTERM, then SIGKILL after 5 s); returns its exit status.
function M:stop()
    if not self.proc.exited then self.proc:kill("TERM") end
    local code = self.proc:wait(5000)
    if not code then
        self.proc:kill("KILL")
        code = self.proc:wait()
    end
    host.fs.rmtree(self.dir)
    return code
end

return M

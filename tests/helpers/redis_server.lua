-- helpers.redis_server: a private redis-server for specs that must break it (kill, pause,
-- restart, require a password). It runs in the foreground as a host.proc child, so the
-- harness kills it if a spec forgets; its data directory is a fresh host.fs.mkdtemp().
--   local srv = rs.start{password = "pw"}   -- srv.port, srv.pid, srv.dir
--   srv:pause() / srv:resume() / srv:kill() / srv:restart() / srv:stop()
local host = require "host"

local M = {}

local Server = {}
Server.__index = Server

local PORT_MIN, PORT_SPAN = 20000, 12001 -- 20000..32000: below the kernel's ephemeral range
local READY_TIMEOUT_MS = 5000
local START_ATTEMPTS = 5

local function cli(port, password, ...)
    local env = password and { REDISCLI_AUTH = password } or nil
    return host.proc.run({ "redis-cli", "-p", tostring(port), ... },
        { env = env, timeout_ms = 2000 })
end

local function answers_ping(port, password)
    local r = cli(port, password, "ping")
    return r ~= nil and r.code == 0 and r.stdout:find("PONG", 1, true) ~= nil
end

-- Something (maybe another redis, maybe with a password) already listens on port.
local function port_in_use(port)
    local r = cli(port, nil, "ping")
    return not (r and (r.stdout .. r.stderr):find("Could not connect", 1, true))
end

local function server_argv(self)
    local argv = { "redis-server", "--port", tostring(self.port), "--bind", "127.0.0.1",
        "--dir", self.dir, "--save", "", "--appendonly", "no", "--daemonize", "no" }
    if self.password then
        argv[#argv + 1] = "--requirepass"
        argv[#argv + 1] = self.password
    end
    return argv
end

-- Starts the process on self.port and waits until it answers; false if it exits first
-- (port taken) or never answers.
function Server:_launch()
    local p, err = host.proc.spawn(server_argv(self), { stdout = "null", stderr = "null" })
    if not p then error("cannot start redis-server: " .. tostring(err), 2) end
    self.proc, self.pid = p, p.pid
    local deadline = host.timer.monotonic() + READY_TIMEOUT_MS
    while host.timer.monotonic() < deadline do
        if p.exited then return false end
        if answers_ping(self.port, self.password) then return not p.exited end
        host.timer.sleep(20)
    end
    self:_halt()
    return false
end

-- Ends the process (it may be paused) and waits for it; keeps the directory.
function Server:_halt()
    local p = self.proc
    if not p then return end
    self.proc, self.pid = nil, nil
    if p.exited then return end
    p:kill("CONT")
    p:kill("TERM")
    if not p:wait(5000) then
        p:kill("KILL")
        p:wait()
    end
end

function Server:pause() assert(self.proc:kill("STOP")) end

function Server:resume() assert(self.proc:kill("CONT")) end

-- SIGKILL, then waits until the process is gone.
function Server:kill()
    local p = self.proc
    self.proc, self.pid = nil, nil
    p:kill("KILL")
    p:wait()
end

-- Starts the server again on the same port and directory (after kill or stop).
function Server:restart()
    self:_halt()
    if not self:_launch() then error("redis-server did not restart on port " .. self.port, 2) end
end

-- Stops the server and removes its directory. Safe to call more than once.
function Server:stop()
    self:_halt()
    if self.dir then host.fs.rmtree(self.dir) end
    self.dir = nil
end

-- start{password = nil} -> a running server on a free port in 20000..32000
function M.start(opts)
    opts = opts or {}
    local self = setmetatable({ password = opts.password, dir = assert(host.fs.mkdtemp("redis")) },
        Server)
    for _ = 1, START_ATTEMPTS do
        self.port = PORT_MIN + host.crypto.random_uniform(PORT_SPAN)
        -- a port someone else's server answers on would fool the readiness check
        if not port_in_use(self.port) and self:_launch() then return self end
        self:_halt()
    end
    host.fs.rmtree(self.dir)
    error("redis-server did not start after " .. START_ATTEMPTS .. " attempts", 2)
end

return M

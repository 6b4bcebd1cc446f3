-- helpers.smtp_sink: a real SMTP server for specs (python3-aiosmtpd with its Mailbox
-- handler) that stores each received mail as a file the spec can read.
local host = require "host"
local roles = require "helpers.roles"

local M = {}
M.__index = M

-- start() -> sink with .port, :messages(), :wait_for(pred, timeout_ms), :stop()
function M.start()
    local dir = assert(host.fs.mkdtemp("smtpsink"))
    for _ = 1, 5 do
        local port = roles.free_port()
        local p = assert(host.proc.spawn({ "/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l",
            "127.0.0.1:" .. port, "-c", "aiosmtpd.handlers.Mailbox", dir .. "/box" },
            { stdout = "null", stderr = "capture" }))
        local sink = setmetatable({ port = port, dir = dir, proc = p }, M)
        if sink:await_ready() then return sink end
        p:kill("KILL")
        p:wait()
    end
    error("could not start the SMTP sink")
end

-- True once the sink accepts SMTP connections (checked with curl's smtp NOOP-like probe).
function M:await_ready()
    local deadline = host.timer.monotonic() + 5000
    while host.timer.monotonic() < deadline do
        if self.proc.exited then return false end
        local r = host.proc.run({ "curl", "-s", "--max-time", "1", "smtp://127.0.0.1:" .. self.port,
            "-X", "NOOP" }, { timeout_ms = 3000 })
        if r and r.code == 0 then return true end
        host.timer.sleep(50)
    end
    return false
end

local function parse(text)
    local head, body = text:match("^(.-)\r?\n\r?\n(.*)$")
    local headers = {}
    for line in (head or ""):gmatch("[^\r\n]+") do
        local k, v = line:match("^([%w%-]+):%s*(.*)$")
        if k then headers[k:lower()] = v end
    end
    return { headers = headers, body = body or "", raw = text }
end

-- Every mail received so far, oldest first.
function M:messages()
    local out = {}
    local names = host.fs.list(self.dir .. "/box/new") or {}
    -- Maildir names are "<seconds>.M<microseconds>P<pid>Q<n>...": order by the numbers (a
    -- plain string sort puts M50000 after M278594 within one second)
    local function key(name)
        local sec, usec, q = name:match("^(%d+)%.M(%d+)P%d+Q(%d+)")
        return tonumber(sec) or 0, tonumber(usec) or 0, tonumber(q) or 0
    end
    table.sort(names, function(a, b)
        local sa, ua, qa = key(a)
        local sb, ub, qb = key(b)
        if sa ~= sb then return sa < sb end
        if ua ~= ub then return ua < ub end
        return qa < qb
    end)
    for _, name in ipairs(names) do
        local text = host.fs.read(self.dir .. "/box/new/" .. name)
        if text then out[#out + 1] = parse(text) end
    end
    return out
end

-- The first mail for which pred(mail) is true, waiting up to timeout_ms.
function M:wait_for(pred, timeout_ms)
    local deadline = host.timer.monotonic() + (timeout_ms or 5000)
    repeat
        for _, m in ipairs(self:messages()) do
            if pred(m) then return m end
        end
        host.timer.sleep(20)
    until host.timer.monotonic() > deadline
    return nil, "no matching mail arrived"
end

-- start_stalled() -> sink with .port and :stop(): an SMTP server that accepts connections
-- and never says a word (a mail server that hangs).
local STALLED = [[
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
print("listening", flush=True)
held = []
while True:
    held.append(s.accept()[0])
]]

function M.start_stalled()
    for _ = 1, 5 do
        local port = roles.free_port()
        local p = assert(host.proc.spawn({ "/usr/bin/python3", "-c", STALLED, tostring(port) },
            { stdout = "capture", stderr = "capture" }))
        local deadline = host.timer.monotonic() + 5000
        repeat
            if (p:output()):find("listening", 1, true) then
                return setmetatable({ port = port, proc = p }, M)
            end
            host.timer.sleep(20)
        until p.exited or host.timer.monotonic() > deadline
        p:kill("KILL")
        p:wait()
    end
    error("could not start the stalled SMTP sink")
end

function M:stop()
    self.proc:kill("TERM")
    self.proc:wait(5000)
    if self.dir then host.fs.rmtree(self.dir) end
end

return M

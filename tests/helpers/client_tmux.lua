-- helpers.client_tmux: terminals for the client's terminal spec. A private tmux server
-- (its own socket, `tmux -L`) runs each `chathost client` in a window of its own; specs
-- type into it (send-keys) and read what a person would see (capture-pane).
local host = require "host"

local M = {}
M.__index = M

-- start() -> a handle on a private tmux server (.socket), started with the first window
function M.start()
    return setmetatable({ socket = "chathost-client-" .. host.crypto.random_hex(4) }, M)
end

-- tmux(args...) -> stdout | nil, stderr
function M:tmux(...)
    local argv = { "tmux", "-L", self.socket, "-f", "/dev/null", ... }
    local r = assert(host.proc.run(argv, { timeout_ms = 5000 }))
    if r.code ~= 0 then return nil, r.stderr end
    return r.stdout
end

-- open(name, argv) -> window: runs argv in a new 160x50 terminal; the window stays after
-- the program exits, so its last screen can still be read.
function M:open(name, argv)
    local quoted = {}
    for i, a in ipairs(argv) do quoted[i] = "'" .. a:gsub("'", "'\\''") .. "'" end
    assert(self:tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "50",
        table.concat(quoted, " ")))
    self.started = true
    assert(self:tmux("set-option", "-t", name, "remain-on-exit", "on"))
    local pid = tonumber(assert(self:tmux("display-message", "-p", "-t", name, "#{pane_pid}")))
    return setmetatable({ tmux = self, name = name, pid = pid }, { __index = M.Window })
end

function M:kill()
    if self.started then self:tmux("kill-server") end
end

M.Window = {}
local Window = M.Window

-- type(text): the text as typed, then Enter
function Window:type(text)
    if text ~= "" then assert(self.tmux:tmux("send-keys", "-t", self.name, "-l", text)) end
    assert(self.tmux:tmux("send-keys", "-t", self.name, "Enter"))
end

-- keys(...): tmux key names (C-c, C-d, ...)
function Window:keys(...)
    assert(self.tmux:tmux("send-keys", "-t", self.name, ...))
end

-- screen() -> the visible screen and the scrollback, as text
function Window:screen()
    return self.tmux:tmux("capture-pane", "-p", "-J", "-t", self.name, "-S", "-500") or ""
end

local function count(screen, text)
    local n, at = 0, 1
    while true do
        local i = screen:find(text, at, true)
        if not i then return n end
        n, at = n + 1, i + #text
    end
end

-- The exit status of the window's program once it has ended | nil while it runs (or
-- when neither /proc nor tmux can tell). Read
-- from /proc (the exit_code field of a zombie), as tmux may be slow to reap its child
-- and note the status (seen with tmux 3.3a when started from the harness).
function Window:exit_status()
    local stat = host.fs.read("/proc/" .. self.pid .. "/stat")
    if stat then
        local after = stat:match("^%d+ %b() (.*)$")
        if after:sub(1, 1) ~= "Z" then return nil end
        local code = tonumber(after:match("(%d+)%s*$"))
        return code and math.floor(code / 256) % 256
    end
    -- gone: reaped by tmux, which reports the status; nil while it cannot (wait_exit
    -- keeps asking, then gives up with nil, so a caller expecting 0 fails)
    local out = self.tmux:tmux("display-message", "-p", "-t", self.name, "#{pane_dead_status}")
    return tonumber(out or "")
end

-- wait_exit(timeout_ms?) -> the exit status of the program once it has ended | nil
function Window:wait_exit(timeout_ms)
    local deadline = host.timer.monotonic() + (timeout_ms or 5000)
    repeat
        local status = self:exit_status()
        if status then return status end
        host.timer.sleep(30)
    until host.timer.monotonic() > deadline
    return nil
end

-- The last line of the screen that is not empty (where the cursor is, in the client).
function Window:last_line()
    return (self:screen():gsub("%s+$", ""):match("([^\n]*)$"))
end

-- wait_last_line(text, timeout_ms?) -> true once the last line is text; false otherwise
function Window:wait_last_line(text, timeout_ms)
    local deadline = host.timer.monotonic() + (timeout_ms or 5000)
    repeat
        if self:last_line() == text then return true end
        host.timer.sleep(30)
    until host.timer.monotonic() > deadline
    return false
end

-- How many times text is on the screen (and in the scrollback).
function Window:count(text) return count(self:screen(), text) end

-- wait_for(text, times?, timeout_ms?) -> the screen once it shows text (plain) at least
-- times times (default 1); fails the test with the screen otherwise
function Window:wait_for(text, times, timeout_ms)
    local deadline = host.timer.monotonic() + (timeout_ms or 5000)
    local screen
    repeat
        screen = self:screen()
        if count(screen, text) >= (times or 1) then return screen end
        host.timer.sleep(30)
    until host.timer.monotonic() > deadline
    error(("window %s never showed %q %d time(s); it shows:\n%s"):format(self.name, text,
        times or 1, screen), 2)
end

return M

-- helpers.netns: a small network of its own for specs that put roles on separate hosts.
-- Each host is a Linux network namespace (`ip netns`) with one veth into a bridge; every
-- address is in the RFC 2544 benchmarking range 198.18.0.0/15 (one /24 per run), and
-- nothing leads out: the namespaces have only their /24's connected route (no default
-- route, no NAT, forwarding off), and the bridge has no port but the hosts' veths. The
-- root namespace (the spec process) holds .1 on the bridge, so specs reach every host
-- directly; it forwards nothing (net.ipv4.ip_forward stays what it is: the helper
-- refuses to start when it is on).
--
-- Names carry the run's pid (namespaces chtest-<pid>-<host>, bridge chtb<pid>, veths
-- chv<pid>x<i> / chp<pid>x<i>), so a run cleans up what a crashed earlier run left
-- (cleanup_stale: the names of pids that no longer exist) and never touches another
-- run's network.
--   local net = netns.create { "gate", "chat1" }  -- net.hosts.gate.ip, .ns, .veth
--   net:spawn("gate", argv, opts) / net:run("gate", argv)  -- inside the host's namespace
--   net:link("chat1", false)       -- cuts the host's link (true: back)
--   net:delay("chat1", 20)         -- netem delay on what the host sends (nil: off)
--   net:relay("chat1", {8090})     -- relay_ip:port -> ip:port with a delay net:delay sets
--   net:destroy()                  -- processes in the namespaces, links, namespaces
local host = require "host"

local M = {}
M.__index = M

M.PREFIX = "chtest-"
local FIRST_HOST = 10 -- host i gets 198.18.x.(FIRST_HOST + i); the root namespace .1
local RELAY_OFFSET = 100 -- and its relay address 198.18.x.(FIRST_HOST + RELAY_OFFSET + i)

-- The argv of one `ip` command (a string, split on spaces) -> result | raises
local function ip(cmd, allow_fail)
    local argv = { "ip" }
    for word in cmd:gmatch("%S+") do argv[#argv + 1] = word end
    local r = assert(host.proc.run(argv, { timeout_ms = 10000 }))
    if r.code ~= 0 and not allow_fail then
        error(("`ip %s` failed (%d): %s"):format(cmd, r.code, r.stderr), 2)
    end
    return r
end

-- Runs a shell snippet to completion without the event loop (spec files decide what to
-- skip while they load, before any task runs) -> its output
local function sh(script)
    local f = assert(io.popen("{\n" .. script .. "\n} 2>&1"))
    local out = f:read("*a")
    f:close()
    return out
end

-- probe() -> netns_ok, why_not, netem_ok, why_not: whether this machine lets the run make
-- namespaces and a bridge (root, iproute2, a kernel with them), and whether tc's netem
-- qdisc is there (the sch_netem module). Synchronous, for a spec file's load time.
function M.probe()
    local pid = host.proc.pid()
    local name = M.PREFIX .. pid .. "-probe"
    local out = sh(table.concat({
        "command -v ip >/dev/null || { echo 'NETNS: no ip command (iproute2)'; exit; }",
        "ip netns add " .. name .. " || { echo 'NETNS: ip netns add failed'; exit; }",
        "ip -n " .. name .. " link set lo up",
        "ip link add chtb" .. pid .. "p type bridge && ip link del chtb" .. pid .. "p"
            .. " || echo 'NETNS: cannot add a bridge'",
        "if ! command -v tc >/dev/null; then echo 'NETEM: no tc command (iproute2)';",
        "elif ! ip netns exec " .. name .. " tc qdisc add dev lo root netem delay 1ms; then",
        "  echo 'NETEM: tc refuses the netem qdisc (kernel module sch_netem missing)'; fi",
        "ip netns del " .. name,
    }, "\n"))
    local detail = out:gsub("%s*[A-Z]+: [^\n]*", ""):gsub("%s+", " ")
    local function why(kind)
        local w = out:match(kind .. ": ([^\n]*)")
        return w and (w .. (detail:match("%S") and (" (" .. detail:match("^%s*(.-)%s*$") .. ")") or ""))
    end
    local netns_why, netem_why = why("NETNS"), why("NETEM")
    return netns_why == nil, netns_why, netns_why == nil and netem_why == nil, netns_why or netem_why
end

local function pid_alive(pid)
    return host.fs.kind("/proc/" .. pid) == "directory"
end

-- Kills what runs in namespace ns (a spec's processes it did not stop, or a crashed run's).
local function kill_inside(ns)
    local r = ip("netns pids " .. ns, true)
    for pid in r.stdout:gmatch("%d+") do
        host.proc.signal(tonumber(pid), "KILL")
    end
end

-- Removes the namespaces, bridges and veths of runs whose pid no longer exists.
function M.cleanup_stale()
    for line in ip("netns list").stdout:gmatch("[^\n]+") do
        local name, pid = line:match("^(" .. M.PREFIX:gsub("%-", "%%-") .. "(%d+)%-%S*)")
        if name and not pid_alive(pid) then
            kill_inside(name)
            ip("netns del " .. name, true)
        end
    end
    for line in ip("-o link show").stdout:gmatch("[^\n]+") do
        local name = line:match("^%d+: ([%w]+)[@:]") or ""
        local pid = name:match("^chtb(%d+)p?$") or name:match("^ch[vp](%d+)x%d+$")
        if pid and not pid_alive(pid) then ip("link del " .. name, true) end
    end
end

-- A /24 of 198.18.0.0/15 that no address of the root namespace is in: from the pid on.
local function free_subnet()
    local used = ip("-o -4 addr show").stdout
    for k = 0, 511 do
        local n = (host.proc.pid() + k) % 512
        local prefix = ("198.%d.%d."):format(18 + math.floor(n / 256), n % 256)
        if not used:find(" " .. prefix, 1, true) then return prefix end
    end
    error("no free /24 in 198.18.0.0/15")
end

-- create{"name", ...} -> net with .hosts[name] = {ns=, ip=, veth=}, .root_ip, .bridge, .prefix.
-- On failure what was made is removed again before the error is raised.
function M.create(names)
    local pid = host.proc.pid()
    local forward = host.fs.read("/proc/sys/net/ipv4/ip_forward")
    if forward and forward:match("^1") then
        error("net.ipv4.ip_forward is on in the root namespace: the test network would not be"
            .. " closed; not creating it")
    end
    M.cleanup_stale()
    local self = setmetatable({ hosts = {}, order = {}, bridge = "chtb" .. pid }, M)
    local ok, err = pcall(function()
        self.prefix = free_subnet()
        self.root_ip = self.prefix .. "1"
        ip("link add " .. self.bridge .. " type bridge")
        self.bridge_made = true
        ip("link set " .. self.bridge .. " up")
        ip("addr add " .. self.root_ip .. "/24 dev " .. self.bridge)
        for i, name in ipairs(names) do
            local h = { name = name, ns = M.PREFIX .. pid .. "-" .. name,
                ip = self.prefix .. (FIRST_HOST + i), veth = ("chv%dx%d"):format(pid, i),
                relay_ip = self.prefix .. (FIRST_HOST + RELAY_OFFSET + i) }
            local peer = ("chp%dx%d"):format(pid, i)
            self.hosts[name], self.order[i] = h, h
            ip("netns add " .. h.ns)
            h.made = true
            ip("link add " .. h.veth .. " type veth peer name " .. peer)
            ip("link set " .. peer .. " netns " .. h.ns)
            ip("link set " .. h.veth .. " master " .. self.bridge .. " up")
            ip("-n " .. h.ns .. " link set " .. peer .. " name eth0")
            ip("-n " .. h.ns .. " addr add " .. h.ip .. "/24 dev eth0")
            ip("-n " .. h.ns .. " addr add " .. h.relay_ip .. "/24 dev eth0")
            ip("-n " .. h.ns .. " link set eth0 up")
            ip("-n " .. h.ns .. " link set lo up")
        end
    end)
    if not ok then
        self:destroy()
        error(err, 0)
    end
    return self
end

-- argv prefixed to run inside host name's namespace
function M:argv(name, argv)
    local out = { "ip", "netns", "exec", assert(self.hosts[name], name).ns }
    for _, a in ipairs(argv) do out[#out + 1] = a end
    return out
end

function M:spawn(name, argv, opts) return host.proc.spawn(self:argv(name, argv), opts) end

function M:run(name, argv, opts) return assert(host.proc.run(self:argv(name, argv), opts)) end

-- routes(name) -> the host's IPv4 routes, all tables (`ip route show table all`)
function M:routes(name)
    return ip("-n " .. self.hosts[name].ns .. " -4 route show table all").stdout
end

-- bridge_ports() -> the names of the interfaces enslaved to the bridge, sorted
function M:bridge_ports()
    local out = {}
    for line in ip("-o link show master " .. self.bridge).stdout:gmatch("[^\n]+") do
        out[#out + 1] = line:match("^%d+: ([^:@%s]+)") or line
    end
    table.sort(out)
    return out
end

-- link(name, up): sets the bridge side of the host's veth up or down (cut: the host
-- reaches nobody and nobody reaches it, its processes go on running).
function M:link(name, up)
    ip("link set " .. self.hosts[name].veth .. (up and " up" or " down"))
end

-- relay(name, ports): where the kernel has no netem, latency comes from a relay
-- (helpers/delay_relay.py) in the host's namespace: connections to relay_ip:port go on to
-- ip:port, every chunk in either direction held back by the relay's delay (0 until
-- net:delay sets it). The host's services are then addressed by relay_ip. -> true | raises
function M:relay(name, ports)
    local h = assert(self.hosts[name], name)
    h.relay_control = assert(host.fs.mkdtemp("relay")) .. "/delay_ms"
    assert(host.fs.write(h.relay_control, "0"))
    local argv = { "/usr/bin/python3", host.root .. "/tests/helpers/delay_relay.py", h.relay_ip,
        h.ip, h.relay_control }
    for _, p in ipairs(ports) do argv[#argv + 1] = tostring(p) end
    h.relay = assert(self:spawn(name, argv, { stdout = "capture", stderr = "capture" }))
    local deadline = host.timer.monotonic() + 10000
    while not h.relay:output():find("ready", 1, true) do
        if h.relay.exited or host.timer.monotonic() > deadline then
            error("delay relay on " .. name .. " did not start: " .. h.relay:output())
        end
        host.timer.sleep(20)
    end
    return true
end

-- The relay of host name takes ms (0: none) and says so -> raises if it does not.
local function relay_delay(h, ms)
    local said = select(2, h.relay:output():gsub("delay %d+", ""))
    assert(host.fs.write(h.relay_control, tostring(ms)))
    h.relay:kill("HUP")
    local deadline = host.timer.monotonic() + 5000
    while select(2, h.relay:output():gsub("delay %d+", "")) <= said do
        if h.relay.exited or host.timer.monotonic() > deadline then
            error("delay relay on " .. h.name .. " did not take the delay: " .. h.relay:output())
        end
        host.timer.sleep(10)
    end
end

-- delay(name, ms): what the host sends waits ms (tc netem on its eth0); nil removes it.
-- A host with a relay (net:relay): the relay holds back what goes through it instead.
function M:delay(name, ms)
    local h = self.hosts[name]
    if h.relay then return relay_delay(h, ms or 0) end
    local ns = h.ns
    if ms then
        local r = self:run(name, { "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
            "delay", ms .. "ms" })
        assert(r.code == 0, "tc netem in " .. ns .. ": " .. r.stderr)
    else
        self:run(name, { "tc", "qdisc", "del", "dev", "eth0", "root" })
    end
end

-- Removes everything: processes still in the namespaces (killed), the veths (their
-- deletion is synchronous, unlike a namespace's), the namespaces and the bridge. Safe to
-- call more than once and on a half-made network.
function M:destroy()
    for _, h in ipairs(self.order) do
        if h.made then
            kill_inside(h.ns)
            ip("link del " .. h.veth, true)
            ip("netns del " .. h.ns, true)
            h.made = false
        end
    end
    if self.bridge_made then
        ip("link del " .. self.bridge, true)
        self.bridge_made = false
    end
end

return M

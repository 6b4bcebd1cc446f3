-- status.servers: the chat servers that are alive now, with their load. A chat server is
-- known from config (chat.instances) or from the set `chatservers`; it is alive while its
-- liveness key chatserver_<name> (written with a TTL by the chat server itself) exists.
-- The view is read from Redis at most every status.servers_refresh_ms and shared by the
-- calls in between (loads are a few milliseconds stale at worst; chat servers refresh
-- theirs every few seconds anyway).
--
-- A server killed without a clean stop keeps its liveness key until the key's TTL runs
-- out; M.probe (every status.probe_interval_ms) connects to each server of the view, and
-- one that does not accept a connection within status.probe_timeout_ms is not chosen
-- until it does again. If every server fails its probe, the probes are what is wrong
-- (status cannot reach them, clients may): then none is left out. What the probes found
-- is kept in the host (host.keep), so a reload does not take a dead server back.
local host = require "host"
local keys = require "lib.keys"

local M = {}

-- Config does not change while the process runs: read it once per generation.
local CONFIGURED = {}
do
    local chat = host.config_copy().chat
    for name in pairs(chat and chat.instances or {}) do CONFIGURED[#CONFIGURED + 1] = name end
    table.sort(CONFIGURED)
end
local REFRESH_MS = host.config.self.servers_refresh_ms

local view, view_at, refreshing = nil, -math.huge, false
local tie = 0
-- The names announced in chatservers at the last refresh: asked for with the configured
-- ones, so while the announced servers stay the same a refresh is one round trip.
local announced_before = {}

-- A sorted array of the names in the given arrays, each once; and the set of them.
local function union(...)
    local set, names = {}, {}
    for i = 1, select("#", ...) do
        for _, n in ipairs((select(i, ...))) do
            if not set[n] then set[n], names[#names + 1] = true, n end
        end
    end
    table.sort(names)
    return names, set
end

-- The live ones among names (only those in wanted, a set), from a query(names) reply.
local function decode_alive(names, res, wanted)
    local loads = #names > 0 and res[2 + #names] or nil
    local alive = {}
    for i, n in ipairs(names) do
        local info = res[1 + i]
        if wanted[n] and type(info) == "string" then
            local d = host.json.safe.decode(info)
            if type(d) == "table" and d.host and d.port then
                local load = tonumber(type(loads) == "table" and loads[i]) or 0
                alive[#alive + 1] = { name = n, host = d.host, port = tostring(d.port), load = load,
                    rpc = type(d.rpc) == "string" and d.rpc or nil, full = d.full == true,
                    ws_port = tonumber(d.ws_port) and tostring(d.ws_port) or nil,
                    db_down = d.db_down == true }
            end
        end
    end
    return alive
end

-- Liveness and load of the given names and the announced names, in one round trip.
local function query(names)
    local cmds = { { "SMEMBERS", keys.CHAT_SERVERS } }
    local hmget = { "HMGET", keys.LOGIN_COUNT }
    for _, n in ipairs(names) do
        cmds[#cmds + 1] = { "GET", keys.chat_server(n) }
        hmget[#hmget + 1] = n
    end
    if #names > 0 then cmds[#cmds + 1] = hmget end
    return host.redis.pipeline(cmds)
end

-- Reads the view from Redis: array of {name, host, port, load} sorted by name, of the
-- configured servers and those announced now.
local function fetch()
    local names, asked = union(CONFIGURED, announced_before)
    local res, err = query(names)
    if not res then return nil, err end
    local announced = type(res[1]) == "table" and res[1] or {}
    local new = false
    for _, n in ipairs(announced) do new = new or not asked[n] end
    if new then -- servers not asked for yet: ask again with them
        names = union(CONFIGURED, announced)
        res, err = query(names)
        if not res then return nil, err end
    end
    announced_before = announced
    local _, wanted = union(CONFIGURED, announced)
    return decode_alive(names, res, wanted)
end

-- forget(): the next call reads the view from Redis again (Redis came back after an
-- outage, maybe restarted empty: the view read before it says nothing about now).
function M.forget()
    view, view_at = nil, -math.huge
end

-- The view, read again when older than REFRESH_MS: -> view | nil, err
local function current()
    if view and (host.timer.monotonic() - view_at < REFRESH_MS or refreshing) then return view end
    refreshing = true
    -- pcall: an error raised in fetch must not leave refreshing set, or every later call
    -- would serve this view for good (LuaJIT yields across pcall: the Redis I/O works)
    local ok, fresh, err = pcall(fetch)
    refreshing = false
    if not ok then error(fresh, 0) end
    if not fresh then return nil, err end
    view, view_at = fresh, host.timer.monotonic()
    return view
end

local PROBE_TIMEOUT_MS = host.config.self.probe_timeout_ms
local TIMEOUTS_DOWN = 2   -- consecutive probe timeouts that leave a server out
-- failures: name -> { refused = bool, timeouts = n } of its last probes;
-- unreachable: name -> true: left out
local probes = host.keep("status.probes")
probes.failures = probes.failures or {}
probes.unreachable = probes.unreachable or {}

-- Where to probe server s: its gRPC address when announced (how peers reach it), else the
-- client port. -> host (an address or a name: host.tcp resolves names), port | nil
local function probe_target(s)
    local h, p = (s.rpc or ""):match("^(.+):(%d+)$")
    if not h then h, p = s.host, s.port end
    h = type(h) == "string" and h:match("^%[(.+)%]$") or h
    if type(h) ~= "string" or h == "" or not tonumber(p) then return nil end
    return h, tonumber(p)
end

-- -> true (connected, or not probed) | false, err
local function reachable(s)
    local ip, port = probe_target(s)
    if not ip then return true end
    local conn, err = host.tcp.connect(ip, port, { timeout_ms = PROBE_TIMEOUT_MS })
    if not conn then return false, err end
    conn:close()
    return true
end

-- Whether the probes so far leave server name out: one refused connection does (the
-- process is gone), timeouts only TIMEOUTS_DOWN in a row (a busy loop here can make a
-- connect time out that did succeed).
local function update(name, up, err)
    local failures = probes.failures
    local f = failures[name]
    if up then
        failures[name] = nil
        return false
    end
    f = f or { timeouts = 0 }
    failures[name] = f
    f.refused = err ~= "timeout"
    f.timeouts = f.refused and 0 or f.timeouts + 1
    return f.refused or f.timeouts >= TIMEOUTS_DOWN
end

-- probe(): connects to every server of the view (read again when stale) at once, and
-- logs each server that is left out or taken back.
function M.probe()
    local servers = current()
    if not servers then return end -- Redis trouble: live() reports it
    local running = {}
    for i, s in ipairs(servers) do running[i] = host.spawn(reachable, s) end
    local unreachable = probes.unreachable
    local now, seen = {}, {}
    for i, s in ipairs(servers) do
        seen[s.name] = true
        local done, up, err = running[i]:wait(PROBE_TIMEOUT_MS + 1000)
        if done then
            if update(s.name, up, err) then
                now[s.name] = true
                if not unreachable[s.name] then
                    host.log.warn("chat server ", s.name, " does not accept connections (",
                        tostring(err), "): not chosen until it does")
                end
            elseif unreachable[s.name] then
                if up then host.log.info("chat server ", s.name, " accepts connections again") end
                now[s.name] = not up or nil
            end
        end
    end
    for name in pairs(probes.failures) do
        if not seen[name] then probes.failures[name] = nil end -- gone from the view
    end
    probes.unreachable = now
end

-- The servers of view that are not left out by their probes; all of them if every one is.
local function probed(servers)
    local unreachable = probes.unreachable
    if next(unreachable) == nil then return servers end
    local out = {}
    for _, s in ipairs(servers) do
        if not unreachable[s.name] then out[#out + 1] = s end
    end
    if #out == 0 then return servers end
    return out
end

-- Without the servers that announce they are full (at chat.max_connections: they refuse
-- new connections) or that their MySQL does not answer (db_down: a login would fail
-- there); all of them when every one is (their refusal is the answer).
local function usable(s) return not s.full and not s.db_down end

local function with_room(servers)
    local all = true
    for _, s in ipairs(servers) do all = all and usable(s) end
    if all then return servers end -- the usual case: no copy per call
    local out = {}
    for _, s in ipairs(servers) do
        if usable(s) then out[#out + 1] = s end
    end
    if #out == 0 then return servers end
    return out
end

-- live() -> alive, tie | nil, err. alive: the live servers sorted by name (without those
-- their probes leave out, and those full or without MySQL); tie: a counter that grows by one per
-- call, for the policy's tie-breaks.
function M.live()
    tie = tie + 1
    local servers, err = current()
    if not servers then return nil, err end
    return with_room(probed(servers)), tie
end

return M

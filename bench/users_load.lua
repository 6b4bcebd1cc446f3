-- bench/users_load.lua: one process of bench/chat_users.sh's load generator. Logs in the
-- users FIRST..LAST (uids) the way a client does after the gate's login: a token and a
-- chat server from StatusService.GetChatServer, a connection from one of SOURCES (source
-- addresses in turn), 1005; after 1018 (busy) or 1010 it closes, waits (backoff 200 ms
-- doubling to 5 s, +-25%, as scripts/client/backoff.lua) and starts again with a new
-- token. Logged-in users send 1023 every BEAT_MS (spread over the interval) and the
-- 1023 -> 1024 round trips of the HOLD_S seconds after every user is in are recorded. Writes OUT (lines: "stat key value", then "hb <ms>" per heartbeat).
--   chathost exec bench/users_load.lua STATUS FIRST LAST SOURCES BEAT_MS HOLD_S OUT START_FILE
--       [IN_FLIGHT]
-- IN_FLIGHT (default 256): login attempts of this process under way at once (the users of
-- one gate-sized front: all of them start at once, IN_FLIGHT at a time are dialling).
-- START_FILE: the process waits until it exists (all generators start the storm at once);
-- OUT.in is written once this process's users are all in, and the hold starts when
-- START_FILE.hold exists (every generator's users are in).
local host = require "host"
local status, first, last, sources, beat_ms, hold_s, out, start_file, in_flight = ...
in_flight = tonumber(in_flight) or 256
first, last, beat_ms, hold_s = tonumber(first), tonumber(last), tonumber(beat_ms), tonumber(hold_s)
local src = {}
for a in sources:gmatch("[^,]+") do src[#src + 1] = a end

local n = last - first + 1
local logged, retries, failures, ports = 0, 0, {}, {}
local t_first, t_last
local holding, hb, hb_lost = false, {}, 0
local conns = {}

local function backoff_ms(attempt)
    local ms = math.min(5000, 200 * 2 ^ (attempt - 1))
    return math.floor(ms * (0.75 + math.random() * 0.5))
end

local function fail(what)
    failures[what] = (failures[what] or 0) + 1
end

-- One attempt: -> conn, port | nil (the failure counted)
local function attempt_login(uid, i, attempt)
    local rsp, err = host.grpc.call(status, "StatusService.GetChatServer", { uid = uid },
        { timeout_ms = 30000 })
    if not rsp or rsp.error ~= 0 then
        fail("GetChatServer " .. tostring(rsp and rsp.error or err))
        return nil
    end
    local conn, cerr = host.tcp.connect(rsp.host, tonumber(rsp.port),
        { timeout_ms = 30000, bind = src[(i + attempt) % #src + 1] })
    if not conn then
        fail("connect " .. tostring(cerr))
        return nil
    end
    local sent, serr = conn:send_frame(1005, host.json.encode { uid = uid, token = rsp.token })
    local id, body = nil, serr
    if sent then id, body = conn:read_frame(60000) end
    local r = id == 1006 and host.json.safe.decode(body)
    if r and r.error == 0 then return conn, rsp.port end
    conn:close()
    fail("1005 " .. (r and tostring(r.error) or tostring(body)))
    return nil
end

-- After a logged-in user's heartbeats, every beat_ms (spread over the interval).
local function hold(uid, conn)
    host.timer.sleep(math.random(beat_ms))
    local body = host.json.encode { fromuid = uid }
    while true do
        local t0 = host.timer.monotonic()
        if not conn:send_frame(1023, body) then hb_lost = hb_lost + 1 return end
        local id = conn:read_frame(beat_ms * 3)
        if id ~= 1024 then hb_lost = hb_lost + 1 return end
        local t1 = host.timer.monotonic()
        if holding then hb[#hb + 1] = t1 - t0 end
        host.timer.sleep(math.max(1, beat_ms - (t1 - t0)))
    end
end

-- in_flight dialers take users: those whose backoff after a failure is over first, then
-- new ones.
local next_new, ready, ready_head, ready_tail, backing_off = first, {}, 1, 0, 0
local attempts = {}

local function dialer()
    while true do
        local uid
        if ready_head <= ready_tail then
            uid = ready[ready_head]
            ready[ready_head] = nil
            ready_head = ready_head + 1
        elseif next_new <= last then
            uid = next_new
            next_new = next_new + 1
        elseif backing_off > 0 then
            host.timer.sleep(5)
        else
            return
        end
        if uid then
            local attempt = (attempts[uid] or 0) + 1
            attempts[uid] = attempt
            local conn, port = attempt_login(uid, uid - first, attempt)
            if conn then
                local now = host.timer.monotonic()
                t_last = math.max(t_last or now, now)
                logged = logged + 1
                ports[port] = (ports[port] or 0) + 1
                conns[#conns + 1] = conn
                host.spawn(hold, uid, conn)
            else
                retries = retries + 1
                backing_off = backing_off + 1
                host.spawn(function()
                    host.timer.sleep(backoff_ms(math.min(attempt, 6)))
                    backing_off = backing_off - 1
                    ready_tail = ready_tail + 1
                    ready[ready_tail] = uid
                end)
            end
        end
    end
end

while not host.fs.read(start_file) do host.timer.sleep(20) end
t_first = host.timer.monotonic()
for _ = 1, in_flight do host.spawn(dialer) end
while logged < n do host.timer.sleep(100) end
local lines = {
    ("stat logged %d"):format(logged), ("stat users %d"):format(n),
    ("stat retries %d"):format(retries), ("stat t_first %.3f"):format(t_first),
    ("stat t_last %.3f"):format(t_last),
}
for what, c in pairs(failures) do lines[#lines + 1] = ("fail %s: %d"):format(what, c) end
for port, c in pairs(ports) do lines[#lines + 1] = ("port %s %d"):format(port, c) end
assert(host.fs.write(out .. ".in", table.concat(lines, "\n") .. "\n"))
while not host.fs.read(start_file .. ".hold") do host.timer.sleep(20) end -- every user is in
holding = true
host.timer.sleep(hold_s * 1000)
holding = false
lines[#lines + 1] = ("stat hb_lost %d"):format(hb_lost)
lines[#lines + 1] = ("stat hb_count %d"):format(#hb)
for _, ms in ipairs(hb) do lines[#lines + 1] = ("hb %.3f"):format(ms) end
assert(host.fs.write(out, table.concat(lines, "\n") .. "\n"))
os.exit(0)

-- bench/failover_login.lua GATE_URL EMAIL PASSWD SENTINEL_SH DIR BASE RUNS (run by
-- bench/sentinel_failover.sh through `chathost exec`): RUNS times, kill -9 the Redis master
-- of tools/sentinel.sh's set-up in DIR (ports from BASE) and print the milliseconds until
-- the first whole login (gate /user_login, then 1005 at the chat server) succeeds.
local host = require "host"
local gate, email, passwd, sentinel_sh, dir, base, runs = ...
base, runs = tonumber(base), tonumber(runs)
local NAME = "chathost"

local function direct(port)
    return host.redis.new { host = "127.0.0.1", port = port, pool_size = 1 }
end

-- -> true | nil, why
local function login()
    local res, err = host.http.request { url = gate .. "/user_login", method = "POST",
        body = host.json.encode { email = email, passwd = passwd },
        headers = { ["content-type"] = "application/json" } }
    if not res then return nil, "gate: " .. tostring(err) end
    local j = host.json.safe.decode(res.body)
    if res.status ~= 200 or not j or j.error ~= 0 then return nil, "gate: " .. res.body end
    local conn, cerr = host.tcp.connect(j.host, tonumber(j.port), { timeout_ms = 3000 })
    if not conn then return nil, "chat: " .. tostring(cerr) end
    local ok, serr = conn:send_frame(1005, host.json.encode { uid = j.uid, token = j.token })
    local id, body = nil, serr
    if ok then id, body = conn:read_frame(5000) end
    conn:close()
    local r = id == 1006 and host.json.safe.decode(body)
    if r and r.error == 0 then return true end
    return nil, "chat: " .. tostring(r and r.error or body)
end

local function field(list, name)
    for k = 1, #(list or {}), 2 do if list[k] == name then return list[k + 1] end end
end

-- The current master's port, once every sentinel sees a healthy replica and its 2 peers.
local function ready()
    while true do
        local port, good = nil, 0
        for i = 2, 4 do
            local s = direct(base + i)
            local m = s:call("SENTINEL", "master", NAME)
            local reps = s:call("SENTINEL", "replicas", NAME)
            s:close()
            port = field(m, "port")
            if field(m, "num-other-sentinels") == "2" and reps and #reps == 1
                and field(reps[1], "flags") == "slave" and field(reps[1], "master-link-status") == "ok" then
                good = good + 1
            end
        end
        if good == 3 then return tonumber(port) end
        host.timer.sleep(200)
    end
end

local times = {}
for run = 1, runs do
    local port = ready()
    assert(login())
    local node = port == base and "master" or "replica"
    local pid = assert(tonumber(host.fs.read(dir .. "/" .. node .. "/redis.pid")))
    local t0 = host.timer.monotonic()
    assert(host.proc.signal(pid, "KILL"))
    local attempts, last = 0, nil
    while true do
        attempts = attempts + 1
        local ok, why = login()
        if ok then break end
        last = why
        host.timer.sleep(50)
    end
    local ms = host.timer.monotonic() - t0
    times[#times + 1] = ms
    print(("run %d: killed the master on port %d; first login after %d ms (%d attempts; last " ..
        "failure: %s)"):format(run, port, ms, attempts, tostring(last)))
    io.stdout:flush()
    local r = assert(host.proc.run({ sentinel_sh, "start", dir, tostring(base) },
        { timeout_ms = 30000 }))
    assert(r.code == 0, r.stderr)
end
table.sort(times)
print(("kill -9 to first login: min %d ms, median %d ms, max %d ms over %d runs"):format(
    times[1], times[math.floor((#times + 1) / 2)], times[#times], #times))

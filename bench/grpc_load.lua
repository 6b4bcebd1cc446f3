-- bench/grpc_load.lua: drives StatusService.GetChatServer with a fixed number of calls in
-- flight on one channel and reports calls/s, latency percentiles and the server's CPU time
-- per call (from /proc/PID/stat). Run by bench/grpc_status.sh:
--   chathost exec bench/grpc_load.lua TARGET SERVER_PID [CALLS] [IN_FLIGHT]
local host = require "host"
local target, pid, total, inflight = ...
total, inflight = tonumber(total) or 100000, tonumber(inflight) or 64

local CLK_TCK = 100 -- getconf CLK_TCK on Linux

local function cpu_ticks(p)
    local stat = assert(host.fs.read("/proc/" .. p .. "/stat"))
    local rest = stat:match("%) (.*)$")
    local f = {}
    for x in rest:gmatch("%S+") do f[#f + 1] = x end
    return tonumber(f[12]) + tonumber(f[13]) -- utime, stime (fields 14 and 15)
end

local function run(n, lat)
    local issued, failed = 0, 0
    local workers = {}
    for w = 1, inflight do
        workers[w] = host.spawn(function()
            while issued < n do
                issued = issued + 1
                local t0 = host.timer.monotonic()
                local rsp = host.grpc.call(target, "StatusService.GetChatServer", { uid = 1000 + issued })
                if lat then lat[#lat + 1] = host.timer.monotonic() - t0 end
                if not rsp or rsp.error ~= 0 then failed = failed + 1 end
            end
        end)
    end
    for _, w in ipairs(workers) do assert(w:wait()) end
    return failed
end

run(5000) -- warm-up: channel, JIT, server caches
local lat = {}
local cpu0, t0 = cpu_ticks(pid), host.timer.monotonic()
local failed = run(total, lat)
local secs = (host.timer.monotonic() - t0) / 1000
local cpu = (cpu_ticks(pid) - cpu0) / CLK_TCK
table.sort(lat)
local function pct(p) return lat[math.max(1, math.floor(#lat * p))] end
print(("calls=%d in_flight=%d failed=%d"):format(total, inflight, failed))
print(("throughput: %.0f calls/s"):format(total / secs))
print(("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f"):format(pct(0.5), pct(0.9), pct(0.99), lat[#lat]))
print(("status process CPU: %.1f us per call (%.2f s over %.2f s)"):format(cpu * 1e6 / total, cpu, secs))
return failed == 0 and 0 or 1

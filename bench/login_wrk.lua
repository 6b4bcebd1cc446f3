-- wrk script for bench/login.sh: POST /user_login for bench users 1..N in turn.
-- wrk runs this in its own LuaJIT, not in chathost: one Lua state per thread (request,
-- response) plus the main one (setup, done), so failures are counted per thread in a
-- global that done() reads back with thread:get.
local n_users = tonumber(os.getenv("BENCH_USERS") or "20")
local passwd = os.getenv("BENCH_PASSWD_OBF")
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local threads = {}
function setup(thread)
    threads[#threads + 1] = thread
end

failures = 0 -- a global: thread:get reads globals of the thread's state

function request()
    i = i % n_users + 1
    local body = ('{"email":"bench%d@example.com","passwd":"%s"}'):format(i, passwd)
    return wrk.format(nil, "/user_login", nil, body)
end

function response(status, headers, body)
    if status ~= 200 or not body:find('"error":0', 1, true) then failures = failures + 1 end
end

function done(summary, latency, requests)
    local total = 0
    for _, t in ipairs(threads) do total = total + (t:get("failures") or 0) end
    io.write(("failed logins: %d\n"):format(total))
end

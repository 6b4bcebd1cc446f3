-- wrk script for bench/login.sh: POST /user_login for bench users 1..N in turn.
-- wrk runs this in its own LuaJIT, not in chathost.
local n_users = tonumber(os.getenv("BENCH_USERS") or "20")
local passwd = os.getenv("BENCH_PASSWD_OBF")
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
    i = i % n_users + 1
    local body = ('{"email":"bench%d@example.com","passwd":"%s"}'):format(i, passwd)
    return wrk.format(nil, "/user_login", nil, body)
end

local failures = 0
function response(status, headers, body)
    if status ~= 200 or not body:find('"error":0', 1, true) then failures = failures + 1 end
end

function done(summary, latency, requests)
    io.write(("failed logins: %d\n"):format(failures))
end

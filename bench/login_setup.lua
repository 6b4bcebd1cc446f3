-- bench/login_setup.lua N PASSWORD: creates users bench1..benchN@example.com with one
-- argon2id hash of PASSWORD (run by bench/login.sh through `chathost exec`), and prints the
-- obfuscated password the Qt client would send, and the CPU one verification costs here.
local host = require "host"
local password = dofile(host.config.scripts.dir .. "/lib/password.lua")
local n, clear = tonumber((...)), select(2, ...)

local hash = assert(host.crypto.hash_password(clear))
for i = 1, n do
    assert(host.db.exec("INSERT INTO user (name, email, pwd_hash) VALUES (?, ?, ?) " ..
        "ON DUPLICATE KEY UPDATE pwd_hash = VALUES(pwd_hash)", "bench" .. i, "bench" .. i .. "@example.com", hash))
end

-- CPU of one verification: all threads of this process, over sequential verifies.
local function cpu_s()
    local stat = host.fs.read("/proc/self/stat"):match("%) (.*)$")
    local f = {}
    for x in stat:gmatch("%S+") do f[#f + 1] = x end
    return (tonumber(f[12]) + tonumber(f[13])) / 100
end
local rounds = 40
local c0, t0 = cpu_s(), host.timer.monotonic()
for _ = 1, rounds do assert(host.crypto.verify_password(hash, clear)) end
local c1, t1 = cpu_s(), host.timer.monotonic()
print(password.xor(clear))
print(("%.3f %.3f"):format((c1 - c0) / rounds * 1e3, (t1 - t0) / rounds))

-- bench/chat_tokens.lua USERS_FILE: gives every user of USERS_FILE (bench/chat_setup.lua's
-- "uid token peer_uid thread_id server_index" lines) a fresh login token in Redis and in
-- the file. A chat login uses its token up, so each run of bench/chat_load.c needs new ones.
-- Run with `chathost exec` against the bench's Redis.
local host = require "host"
local path = ...

local BATCH = 500
local lines, cmds = {}, {}
for line in assert(host.fs.read(path)):gmatch("[^\n]+") do
    local uid, rest = line:match("^(%d+) %S+ (.*)$")
    assert(uid, "bad line in " .. path .. ": " .. line)
    local token = host.crypto.random_hex(16)
    lines[#lines + 1] = ("%s %s %s"):format(uid, token, rest)
    cmds[#cmds + 1] = { "SET", "utoken_" .. uid, token, "EX", 86400 }
    if #cmds == BATCH then
        assert(host.redis.pipeline(cmds))
        cmds = {}
    end
end
if #cmds > 0 then assert(host.redis.pipeline(cmds)) end
assert(host.fs.write(path, table.concat(lines, "\n") .. "\n"))
return 0

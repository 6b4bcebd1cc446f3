-- bench/chat_groups_setup.lua GROUPS SIZE SENDERS OUT_FILE: creates GROUPS groups of SIZE
-- bench users each (rows written straight into chat_thread, group_chat and group_member),
-- the first SENDERS members of each group its senders, and writes OUT_FILE for
-- bench/chat_load.c's group mode: one line per user, "uid token sender thread_id
-- server_index", the members alternating between the two chat servers, the token "-"
-- (bench/chat_tokens.lua writes real ones). Run with `chathost exec` against the bench's
-- MariaDB.
local host = require "host"
local ngroups, size = tonumber((...)), tonumber((select(2, ...)))
local nsenders, out_path = tonumber((select(3, ...))), (select(4, ...))

local BATCH = 500
local HASH = "$argon2id$v=19$m=19456,t=2,p=1$YmVuY2hzYWx0YmVuY2g$bench" -- never used: token login
local prefix = "cg" .. host.crypto.random_hex(3) .. "_"

-- Runs "INSERT ... VALUES" + rows (each a "(?, ...)" of args' width) in batches
local function insert(head, row, rows_args)
    for first = 1, #rows_args, BATCH do
        local rows, args = {}, {}
        for i = first, math.min(#rows_args, first + BATCH - 1) do
            rows[#rows + 1] = row
            for _, a in ipairs(rows_args[i]) do args[#args + 1] = a end
        end
        assert(host.db.exec(head .. table.concat(rows, ","), unpack(args)))
    end
end

local users = {}
for i = 1, ngroups * size do
    users[i] = { prefix .. i, prefix .. i .. "@bench.example", HASH }
end
insert("INSERT INTO user (name, email, pwd_hash) VALUES ", "(?, ?, ?)", users)
-- read back by name: ids need not be consecutive (Galera hands out every third)
local byname, uids = {}, {}
local stored = assert(host.db.query("SELECT uid, name FROM user WHERE name LIKE ?", prefix .. "%"))
for _, r in ipairs(stored) do byname[r.name] = r.uid end
for i = 1, #users do uids[i] = assert(byname[prefix .. i], "user not stored") end
local threads, gchats, members = {}, {}, {}
for g = 1, ngroups do
    local t = assert(host.db.exec("INSERT INTO chat_thread (type) VALUES ('group')")).insert_id
    threads[g] = t
    gchats[g] = { t, "bench group " .. g, uids[(g - 1) * size + 1], size }
    for m = 1, size do
        members[#members + 1] = { t, uids[(g - 1) * size + m], m == 1 and "owner" or "member" }
    end
end
insert("INSERT INTO group_chat (thread_id, name, owner_uid, member_count) VALUES ", "(?, ?, ?, ?)", gchats)
insert("INSERT INTO group_member (thread_id, uid, role, joined_message_id) VALUES ", "(?, ?, ?, 1)",
    members)
local lines = {}
for g = 1, ngroups do
    for m = 1, size do
        lines[#lines + 1] = ("%d - %d %d %d"):format(uids[(g - 1) * size + m],
            m <= nsenders and 1 or 0, threads[g], m % 2)
    end
end
assert(host.fs.write(out_path, table.concat(lines, "\n") .. "\n"))
print(("created %d groups of %d users (%d senders each)"):format(ngroups, size, nsenders))
return 0

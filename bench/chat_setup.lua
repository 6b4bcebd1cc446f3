-- bench/chat_setup.lua PAIRS OUT_FILE [SERVERS] [LAYOUT]: creates 2*PAIRS users (bench users
-- "cb<n>"), makes each pair friends with their private thread, writes a login token for
-- every user to Redis, and writes OUT_FILE for bench/chat_load.c: one line per user,
-- "uid token peer_uid thread_id server_index" (the first user of a pair is the one
-- chat_load's msg mode sends from). With SERVERS=2 the two users of a pair are on different
-- servers, and LAYOUT says which: "balanced" (the default) puts the sender of every other
-- pair on each server, so each server sends half the messages and receives the other half,
-- as users spread by status do; "senders" puts every sender on server 0 and every receiver
-- on server 1 (one server stores everything, the other only delivers: the layout of the
-- runs before 2026-12-07 12:00). With more servers each user's server is drawn at random. Run with `chathost exec` against the bench's Redis and MariaDB.
local host = require "host"
local pairs_n, out_path, nservers = tonumber((...)), select(2, ...), tonumber(select(3, ...) or "1")
local layout = select(4, ...) or "balanced"
assert(layout == "balanced" or layout == "senders", "LAYOUT: balanced or senders")

local BATCH = 500
local HASH = "$argon2id$v=19$m=19456,t=2,p=1$YmVuY2hzYWx0YmVuY2g$bench" -- never used: token login
local prefix = "cb" .. host.crypto.random_hex(3) .. "_"

-- Inserts users 1..n in batches; returns their uids in order.
local function create_users(n)
    local uids = {}
    for first = 1, n, BATCH do
        local last = math.min(n, first + BATCH - 1)
        local rows, args = {}, {}
        for i = first, last do
            rows[#rows + 1] = "(?, ?, ?)"
            args[#args + 1] = prefix .. i
            args[#args + 1] = prefix .. i .. "@bench.example"
            args[#args + 1] = HASH
        end
        assert(host.db.exec("INSERT INTO user (name, email, pwd_hash) VALUES " ..
            table.concat(rows, ","), unpack(args)))
    end
    -- read back by name: ids need not be consecutive (Galera hands out every third)
    local byname = {}
    local rows = assert(host.db.query("SELECT uid, name FROM user WHERE name LIKE ?", prefix .. "%"))
    for _, r in ipairs(rows) do byname[r.name] = r.uid end
    for i = 1, n do uids[i] = assert(byname[prefix .. i], "user not stored") end
    return uids
end

local function befriend(uids)
    local threads = {}
    for p = 1, #uids / 2, BATCH do
        local last = math.min(#uids / 2, p + BATCH - 1)
        local frows, fargs = {}, {}
        for k = p, last do
            local a, b = uids[2 * k - 1], uids[2 * k]
            frows[#frows + 1] = "(?, ?, ''), (?, ?, '')"
            fargs[#fargs + 1] = a; fargs[#fargs + 1] = b
            fargs[#fargs + 1] = b; fargs[#fargs + 1] = a
        end
        assert(host.db.exec("INSERT INTO friend (self_id, friend_id, back) VALUES " ..
            table.concat(frows, ","), unpack(fargs)))
        local prows, pargs = {}, {}
        for k = p, last do
            -- one INSERT per thread: its insert_id is exact whatever the AUTO_INCREMENT mode
            local thread = assert(host.db.exec("INSERT INTO chat_thread (type) VALUES ('private')")).insert_id
            local a, b = uids[2 * k - 1], uids[2 * k]
            threads[k] = thread
            prows[#prows + 1] = "(?, ?, ?)"
            pargs[#pargs + 1] = thread
            pargs[#pargs + 1] = math.min(a, b)
            pargs[#pargs + 1] = math.max(a, b)
        end
        assert(host.db.exec("INSERT INTO private_chat (thread_id, user1_id, user2_id) VALUES " ..
            table.concat(prows, ","), unpack(pargs)))
    end
    return threads
end

local uids = create_users(pairs_n * 2)
local threads = befriend(uids)
local lines, cmds = {}, {}
for k = 1, pairs_n do
    for side = 0, 1 do
        local me, peer = uids[2 * k - 1 + side], uids[2 * k - side]
        local token = host.crypto.random_hex(16)
        local server = nservers > 2 and host.crypto.random_uniform(nservers)
            or (nservers > 1 and (layout == "senders" and side or (side + k) % 2) or 0)
        lines[#lines + 1] = ("%d %s %d %d %d"):format(me, token, peer, threads[k], server)
        cmds[#cmds + 1] = { "SET", "utoken_" .. me, token, "EX", 86400 }
        if #cmds == BATCH then
            assert(host.redis.pipeline(cmds))
            cmds = {}
        end
    end
end
if #cmds > 0 then assert(host.redis.pipeline(cmds)) end
assert(host.fs.write(out_path, table.concat(lines, "\n") .. "\n"))
print(("created %d users in %d friend pairs"):format(#uids, pairs_n))
return 0

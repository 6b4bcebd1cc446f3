-- The resource role's chunks in flight (docs/protocol.md §13.4): a chunk costs no Redis
-- command (its tally is in its partial file), a connection's next chunk is written while
-- the chunk before it still waits (here: the last chunk's completion, held back in Redis),
-- the replies keep the order of the requests, at most resource.max_chunks_in_flight are in
-- flight, and a chunk resent while the upload completes is answered 0. Redis writes are
-- held back with CLIENT PAUSE WRITE (the completion's claim is a SET: a write), which lifts
-- itself after 5 s if a test fails before its UNPAUSE.
local host = require "host"
local util = require "helpers.util"
local res = require "helpers.res_client"
local rc = require "helpers.res_cluster"

local CHUNK = res.CHUNK

-- Two friends, an image message from the first to the second, and its upload's fields
-- (helpers.res_client) for data of n bytes
local function upload_of(n)
    local _, _, u = rc.image_upload(n, true)
    return u
end

-- Chunk 1 sent and answered: the upload exists, the connection keeps it -> its partial file
local function started(role, c, u)
    local r = assert(c:request(1041, res.image_body(1041, u, 1)))
    assert.equal(0, r.error)
    return role.files .. "/partial/" .. rc.upload_row(u.name).upload_id
end

-- Waits until the file at path holds chunk seq of data (the role wrote it) -> true | false
local function written(path, data, seq)
    local want = data:sub((seq - 1) * CHUNK + 1, seq * CHUNK)
    local deadline = host.timer.monotonic() + 4000
    while host.timer.monotonic() < deadline do
        local got = host.fs.read(path)
        if got and got:sub((seq - 1) * CHUNK + 1, seq * CHUNK) == want then return true end
        host.timer.sleep(5)
    end
    return false
end

-- The next frame on c (within ms, 5000 unless given) -> id, body
local function next_frame(c, ms)
    return assert(c:read_frame(ms or 5000))
end

local function pause() assert(host.redis.call("CLIENT", "PAUSE", 5000, "WRITE")) end
local function unpause() assert(host.redis.call("CLIENT", "UNPAUSE")) end

-- Waits until a client's write (a completion's claim) is held back by the pause -> true | false
local function write_held()
    local deadline = host.timer.monotonic() + 4000
    while host.timer.monotonic() < deadline do
        local info = assert(host.redis.call("INFO", "clients"))
        if tonumber(info:match("blocked_clients:(%d+)") or 0) > 0 then return true end
        host.timer.sleep(5)
    end
    return false
end

-- An upload of 3 chunks begun on a new connection to role, chunk 2 answered, Redis writes
-- held back and the last chunk sent: its completion waits (for the claim) -> c, u, the
-- partial file's path
local function last_held(role)
    local u = upload_of(3 * CHUNK)
    local c = assert(res.connect(role.port))
    local path = started(role, c, u)
    assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 2))).error)
    pause()
    assert(c:send(1037, res.image_body(1037, u, 3)))
    assert.is_true(write_held())
    return c, u, path
end

-- u's data with chunk seq replaced by other bytes of its length
local function other(u, seq)
    local from, to = (seq - 1) * CHUNK + 1, math.min(seq * CHUNK, #u.data)
    return u.data:sub(1, from - 1) .. ("z"):rep(to - from + 1) .. u.data:sub(to + 1)
end

-- row_locked(upload_id) -> unlock(): the upload's row locked by a transaction of the spec's
-- (FOR UPDATE) until unlock() ends it
local function row_locked(id)
    local release, locked = host.promise(), host.promise()
    local holder = host.spawn(function()
        return host.db.tx(function(tx)
            assert(tx:query("SELECT upload_id FROM upload WHERE upload_id = ? FOR UPDATE", id))
            locked:resolve(true)
            release:wait(10000)
            return true
        end)
    end)
    assert.is_true(locked:wait(5000))
    return function()
        release:resolve()
        assert(holder:wait(5000))
    end
end

-- rows_waiting() -> {id} of a completion's rows' UPDATE waiting in MariaDB | nil (our own
-- user's threads: no privilege needed)
local function rows_waiting()
    return assert(host.db.query("SELECT ID AS id FROM information_schema.PROCESSLIST "
        .. "WHERE INFO LIKE 'UPDATE upload SET state = 1%'"))[1]
end

describe("resource chunks in flight", function()
    timeout(30000)
    local role

    setup(function() role = rc.start() end)
    teardown(function() role:stop() end)

    it("costs no Redis command per chunk: chunks are answered and tallied while Redis takes no command at all", function()
        local u = upload_of(5 * CHUNK)
        local c = assert(res.connect(role.port))
        started(role, c, u)
        -- every client's commands held back, reads too, for 1.5 s (this one's as well: the
        -- pause is left to end by itself)
        assert(host.redis.call("CLIENT", "PAUSE", 1500, "ALL"))
        local paused_at = host.timer.monotonic()
        for seq = 2, 4 do assert(c:send(1037, res.image_body(1037, u, seq))) end
        for seq = 2, 4 do
            local id, r = next_frame(c, 1000)
            assert.same({ 1038, seq, 0 }, { id, r.seq, r.error })
        end
        assert.is_true(host.timer.monotonic() - paused_at < 1500) -- (answered during the pause)
        host.timer.sleep(math.max(0, paused_at + 1600 - host.timer.monotonic())) -- (the pause over)
        assert.equal("PONG", host.redis.call("PING"))
        local n, set = rc.tallied(role, u.name)
        assert.equal(4, n)
        assert.is_nil(set[5])
        c:close()
    end)

    it("takes a chunk resent while its upload completes in flight, answers it after the completion, and keeps the bytes tallied", function()
        local c, u, path = last_held(role)
        -- chunk 2 again, other bytes, while chunk 3's completion waits for its claim: the
        -- partial is sealed by then (the claim is asked for beside the checks), so the
        -- resend is not written, and not answered before chunk 3
        local changed = other(u, 2)
        assert(c:send(1037, res.image_body(1037, { uid = u.uid, token = u.token, name = u.name,
            receiver = u.receiver, message_id = u.message_id, data = changed }, 2)))
        local early = c:read_frame(150)
        local kept = host.fs.read(path):sub(CHUNK + 1, 2 * CHUNK) == u.data:sub(CHUNK + 1, 2 * CHUNK)
        unpause()
        assert.is_nil(early)
        assert.is_true(kept)
        local id3, r3 = next_frame(c)
        local id2, r2 = next_frame(c)
        assert.same({ 1038, 3, 0 }, { id3, r3.seq, r3.error })
        assert.same({ 1038, 2, 0 }, { id2, r2.seq, r2.error })
        local row = rc.upload_row(u.name)
        assert.equal(1, row.state)
        assert.equal(u.data, host.fs.read(role.files .. "/objects/" .. row.hash:sub(1, 2) .. "/" .. row.hash))
        c:close()
    end)

    it("answers 1104 data to a chunk in flight that is not base64, and writes nothing of it", function()
        local u = upload_of(4 * CHUNK)
        local c = assert(res.connect(role.port))
        local path = started(role, c, u)
        assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 2))).error)
        local body = res.image_body(1037, u, 3)
        body.data = "!" .. body.data:sub(2) -- the right length, one character off the alphabet
        assert(c:send(1037, body))
        assert(c:send(1037, res.image_body(1037, u, 4)))
        local _, bad = next_frame(c)
        local _, good = next_frame(c)
        assert.same({ 3, 1104, "data" }, { bad.seq, bad.error, bad.field })
        assert.same({ 4, 0 }, { good.seq, good.error })
        local n, set = rc.tallied(role, u.name)
        assert.equal(3, n)
        assert.is_nil(set[3])
        assert.equal(("\0"):rep(CHUNK), host.fs.read(path):sub(2 * CHUNK + 1, 3 * CHUNK))
        assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 3))).error)
        assert.equal(1, rc.upload_row(u.name).state)
        c:close()
    end)

    it("answers 0 to a last chunk resent while its first copy completes the upload", function()
        local u = upload_of(2 * CHUNK + 100)
        local c = assert(res.connect(role.port))
        started(role, c, u)
        assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 2))).error)
        assert(c:send(1037, res.image_body(1037, u, 3)))
        assert(c:send(1037, res.image_body(1037, u, 3)))
        local _, first = next_frame(c)
        local _, again = next_frame(c)
        assert.same({ 3, 0 }, { first.seq, first.error })
        assert.same({ 3, 0 }, { again.seq, again.error })
        local row = rc.upload_row(u.name)
        assert.equal(1, row.state)
        assert.equal(u.data, host.fs.read(role.files .. "/objects/" .. row.hash:sub(1, 2) .. "/" .. row.hash))
        c:close()
    end)

    it("writes an upload's rows after its link when the transaction prepared during the link fails", function()
        -- the upload's row locked here: the completion's prepared transaction waits for it
        -- and its statement is killed (KILL QUERY); the rows are then written again after
        -- the link, by a transaction of their own, which gets the lock once it is let go
        local db = host.db
        local role = rc.start()
        local u = upload_of(2 * CHUNK)
        local c = assert(res.connect(role.port))
        started(role, c, u)
        local id = rc.upload_row(u.name).upload_id
        local unlock = row_locked(id)
        assert(c:send(1037, res.image_body(1037, u, 2)))
        local killed = util.wait_until(function()
            local w = rows_waiting()
            return w and assert(db.exec("KILL QUERY " .. tonumber(w.id))) and true
        end, 8000, "the prepared rows waiting for the lock")
        host.timer.sleep(200) -- (the rows again, waiting for the lock in turn)
        unlock()
        assert.is_true(killed)
        local idr, body = next_frame(c)
        assert.same({ 1038, 0 }, { idr, body.error })
        assert.equal(1, rc.upload_row(u.name).state)
        c:close()
        role:stop()
    end)

    it("answers a chunk resent after the completion's claim without making its partial again", function()
        -- the upload's row locked here: the completion's rows wait for it after its file is
        -- named, linked and synced (the partial's own name gone); a chunk resent on the same
        -- connection meanwhile goes in flight, is not written, and is answered after it
        local role = rc.start()
        local u = upload_of(2 * CHUNK)
        local c = assert(res.connect(role.port))
        local path = started(role, c, u)
        local id = rc.upload_row(u.name).upload_id
        local unlock = row_locked(id)
        assert(c:send(1037, res.image_body(1037, u, 2)))
        assert(util.wait_until(function() return rows_waiting() ~= nil end, 8000,
            "the completion's rows waiting for the lock"))
        assert(util.wait_until(function() return host.fs.kind(path) == nil end, 4000,
            "the partial's own name removed"))
        assert(c:send(1037, res.image_body(1037, u, 1))) -- (resent)
        local early = c:read_frame(200)
        local remade = host.fs.kind(path)
        unlock()
        assert.is_nil(early)
        assert.is_nil(remade)
        local id2, last = next_frame(c)
        local id1, again = next_frame(c)
        assert.same({ 1038, 2, 0 }, { id2, last.seq, last.error })
        assert.same({ 1038, 1, 0 }, { id1, again.seq, again.error })
        assert.equal(1, rc.upload_row(u.name).state)
        assert.is_nil(host.fs.kind(path))
        c:close()
        role:stop()
    end)

    it("creates an upload whose first chunk's handler was abandoned at its deadline during its checks", function()
        -- the upload table locked here: the new row's INSERT and the quota's query wait past
        -- resource.handler_timeout_ms (1019); once the lock goes, the row's transaction
        -- finishes on its own (its checks pass: committed), so a resent first chunk finds
        -- the upload at once instead of waiting on an uncommitted row
        local role = rc.start { resource = { handler_timeout_ms = 300 } }
        local u = upload_of(3 * CHUNK)
        local locker = assert(host.db.new { pool_size = 1 })
        assert(locker:exec("LOCK TABLES upload WRITE"))
        local c = assert(res.connect(role.port))
        assert(c:send(1041, res.image_body(1041, u, 1)))
        local id, body = next_frame(c)
        assert(locker:exec("UNLOCK TABLES"))
        locker:close()
        assert.same({ 1042, 1019 }, { id, body.error })
        local again = assert(c:request(1041, res.image_body(1041, u, 1), 2000))
        assert.equal(0, again.error)
        assert.equal(0, rc.upload_row(u.name).state)
        c:close()
        role:stop()
    end)

    it("completes an upload whose handler was abandoned at its deadline in the middle of its completion", function()
        -- one chunk: written and completed in the 1041 handler, whose claim (a Redis write)
        -- is held back past resource.handler_timeout_ms
        local role = rc.start { resource = { handler_timeout_ms = 200 } }
        local u = upload_of(CHUNK - 100)
        local c = assert(res.connect(role.port))
        pause()
        assert(c:send(1041, res.image_body(1041, u, 1)))
        assert.is_true(write_held())
        local id, body = next_frame(c)
        assert.same({ 1042, 1019 }, { id, body.error }) -- the handler abandoned
        unpause()
        -- its completion went on: complete without another chunk (the claim it took would
        -- otherwise hold every resend off for 300 s)
        local deadline = host.timer.monotonic() + 4000
        while rc.upload_row(u.name).state ~= 1 and host.timer.monotonic() < deadline do
            host.timer.sleep(10)
        end
        assert.equal(1, rc.upload_row(u.name).state)
        c:close()
        role:stop()
    end)
end)

-- max_chunks_in_flight n: the last chunk held in its completion (Redis writes held back),
-- chunk 2 resent, then a 1045 (an image nobody has: 1046 error 1100 without a Redis write)
-- -> the ids of the frames in the order they arrive (the 1045's reply awaited during the
-- pause when it may come then)
local function replies_with_bound(n)
    local role = rc.start { resource = { max_chunks_in_flight = n } }
    local c, u = last_held(role)
    assert(c:send(1037, res.image_body(1037, u, 2)))
    assert(c:send(1045, { message_id = 999999999 }))
    local order = {}
    if n >= 2 then -- both chunks in flight: the 1045 is handled at once
        local id, r = next_frame(c)
        order[1] = id .. ":" .. tostring(r.error)
    else -- the resent chunk waits for chunk 3, and the 1045 for its handler
        host.timer.sleep(100)
    end
    unpause()
    while #order < 3 do
        local id, r = next_frame(c)
        order[#order + 1] = id .. ":" .. tostring(r.error)
    end
    c:close()
    role:stop()
    return order
end

describe("resource max_chunks_in_flight", function()
    timeout(30000)

    it("takes a second chunk in flight at 2 and handles the next request meanwhile", function()
        assert.same({ "1046:1100", "1038:0", "1038:0" }, replies_with_bound(2))
    end)

    it("holds the next request at 1 until the chunk in flight is answered", function()
        local order = replies_with_bound(1)
        assert.equal("1038:0", order[1])
    end)
end)

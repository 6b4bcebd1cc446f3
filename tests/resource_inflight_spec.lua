-- The resource role's chunks in flight (docs/protocol.md §13.4): a connection's next chunk
-- is written while the chunk before it still waits for its mark in Redis, the chunks
-- written meanwhile are marked together, the replies keep the order of the requests, at most resource.max_chunks_in_flight are in flight, and a
-- chunk resent while the upload completes is answered 0. Redis writes are held back with
-- CLIENT PAUSE WRITE (the chunk's mark is an EVAL: a write), which lifts itself after 5 s
-- if a test fails before its UNPAUSE.
local host = require "host"
local cluster = require "helpers.chat_cluster"
local res = require "helpers.res_client"
local rc = require "helpers.res_cluster"

local CHUNK = res.CHUNK

-- Two friends, an image message from the first to the second, and its upload's fields
-- (helpers.res_client) for data of n bytes
local function upload_of(n)
    local a, b = rc.session_user(), rc.session_user()
    local thread = cluster.befriend(a, b)
    local name = rc.name()
    return { uid = a.uid, token = a.token, name = name, receiver = b.uid,
        message_id = rc.image_message(a, b, thread, name), data = res.png(n) }
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

-- The next frame on c -> id, body
local function next_frame(c)
    return assert(c:read_frame(5000))
end

local function pause() assert(host.redis.call("CLIENT", "PAUSE", 5000, "WRITE")) end
local function unpause() assert(host.redis.call("CLIENT", "UNPAUSE")) end

-- bit seq - 1 of an upload's chunk bitmap
local function redis_bit(upload_id, seq)
    return host.redis.call("GETBIT", "upload_chunks_" .. upload_id, seq - 1)
end

-- EVAL commands Redis has run so far (the marks; nothing else here sends one)
local function evals()
    local info = assert(host.redis.call("INFO", "commandstats"))
    return tonumber(info:match("cmdstat_eval:calls=(%d+)") or 0)
end

-- Waits until a client's write (a chunk's mark) is held back by the pause -> true | false
local function mark_held()
    local deadline = host.timer.monotonic() + 4000
    while host.timer.monotonic() < deadline do
        local info = assert(host.redis.call("INFO", "clients"))
        if tonumber(info:match("blocked_clients:(%d+)") or 0) > 0 then return true end
        host.timer.sleep(5)
    end
    return false
end

-- An upload of chunks (32 KiB each) begun on a new connection to role, then Redis writes
-- held back and chunks 2 and 3 sent -> c, u, the partial file's path
local function two_sent(role, chunks)
    local u = upload_of(chunks * CHUNK)
    local c = assert(res.connect(role.port))
    local path = started(role, c, u)
    pause()
    assert(c:send(1037, res.image_body(1037, u, 2)))
    assert(c:send(1037, res.image_body(1037, u, 3)))
    return c, u, path
end

describe("resource chunks in flight", function()
    timeout(30000)
    local role

    setup(function() role = rc.start() end)
    teardown(function() role:stop() end)

    it("writes a connection's next chunk while the one before waits for its mark, and answers both in order", function()
        local c, u, path = two_sent(role, 3)
        local both = written(path, u.data, 3) -- chunk 2's mark is held back meanwhile
        unpause()
        assert.is_true(both)
        local id2, r2 = next_frame(c)
        local id3, r3 = next_frame(c)
        assert.same({ 1038, 2, 0 }, { id2, r2.seq, r2.error })
        assert.same({ 1038, 3, 0 }, { id3, r3.seq, r3.error })
        local row = rc.upload_row(u.name)
        assert.equal(1, row.state)
        assert.equal(u.data, host.fs.read(role.files .. "/objects/" .. row.sha:sub(1, 2) .. "/" .. row.sha))
        c:close()
    end)

    it("marks the chunks written while an earlier chunk's mark waits with one command", function()
        local u = upload_of(5 * CHUNK)
        local c = assert(res.connect(role.port))
        local path = started(role, c, u)
        pause()
        assert(c:send(1037, res.image_body(1037, u, 2)))
        -- chunk 2's mark is held back by Redis before 3 and 4 are sent (were they written
        -- before chunk 2's task took its batch, all three would share one mark); 3 and 4
        -- are written meanwhile, and wait for their turn
        assert.is_true(mark_held())
        assert(c:send(1037, res.image_body(1037, u, 3)))
        assert(c:send(1037, res.image_body(1037, u, 4)))
        local written34 = written(path, u.data, 3) and written(path, u.data, 4)
        local before = evals()
        unpause()
        assert.is_true(written34)
        for seq = 2, 4 do
            local id, r = next_frame(c)
            assert.same({ 1038, seq, 0 }, { id, r.seq, r.error })
        end
        -- chunk 2's own mark (held back, counted when Redis runs it) and one for 3 and 4
        assert.equal(2, evals() - before)
        local upload_id = rc.upload_row(u.name).upload_id
        assert.equal(4, host.redis.call("BITCOUNT", "upload_chunks_" .. upload_id))
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
        local upload_id = rc.upload_row(u.name).upload_id
        assert.equal(3, host.redis.call("BITCOUNT", "upload_chunks_" .. upload_id))
        assert.equal(0, redis_bit(upload_id, 3))
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
        assert.equal(u.data, host.fs.read(role.files .. "/objects/" .. row.sha:sub(1, 2) .. "/" .. row.sha))
        c:close()
    end)
end)

-- max_chunks_in_flight n: chunks 2 and 3 sent while marks are held back, then a 1045 (an
-- image nobody has: 1046 error 1100 without a Redis write) -> the ids of the frames in the
-- order they arrive (the 1045's reply awaited during the pause when it may come then)
local function replies_with_bound(n)
    local role = rc.start { resource = { max_chunks_in_flight = n } }
    local c, u, path = two_sent(role, 4)
    assert(c:send(1045, { message_id = 999999999 }))
    local order = {}
    if n >= 2 then -- both chunks in flight: the 1045 is handled at once
        local id, r = next_frame(c)
        order[1] = id .. ":" .. tostring(r.error)
    else -- chunk 3 waits for chunk 2, and the 1045 for chunk 3's handler
        assert.is_true(written(path, u.data, 2))
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

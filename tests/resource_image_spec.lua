-- The resource role's chat images (docs/protocol.md §13): the Season 2 client's upload
-- (1041, a window of 5 1037, 1043 after a pause) and download (1045, 1047) through the
-- real resource channel, the 1039 to a receiver on another chat server, resumes after a
-- dropped connection and after a restart of the resource server, and identity per
-- connection.
local host = require "host"
local util = require "helpers.util"
local cluster = require "helpers.chat_cluster"
local res = require "helpers.res_client"
local rc = require "helpers.res_cluster"
local db, redis = host.db, host.redis

local session_user = rc.session_user

-- The path of the object named hash under the storage folder dir (docs/protocol.md §13.6)
local function object_path(dir, hash)
    return dir .. "/objects/" .. hash:sub(1, 2) .. "/" .. hash
end

local function file_of(role, hash)
    return host.fs.read(object_path(role.files, hash))
end

-- Two friends, a and b, and a's image message to b -> a, b, u (the upload's fields for
-- helpers.res_client, data still to set)
local function pair()
    local a, b = session_user(), session_user()
    local thread = cluster.befriend(a, b)
    local name = rc.name()
    local id = rc.image_message(a, b, thread, name)
    return a, b, { uid = a.uid, token = a.token, name = name, message_id = id,
        receiver = b.uid }
end

local function message_row(id)
    return db.query("SELECT status FROM chat_message WHERE message_id = ?", id)[1]
end

describe("resource images across two chat servers", function()
    timeout(30000)
    local cl, role

    setup(function()
        cl = cluster.start()
        role = rc.start()
    end)

    teardown(function()
        role:stop()
        cl:stop()
    end)

    it("uploads on chat1's sender, pushes 1039 to the receiver on chat2, who downloads the exact bytes", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(cl.chats[1].port, a)
        local cb = cluster.login(cl.chats[2].port, b)
        local name = rc.name()
        -- the S2 client's order: 1035 on the chat channel, its 1036 names the message, then
        -- the upload on the resource channel, the 1036's fromuid/touid as sender/receiver
        local ack = assert(ca:request(1035, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            md5 = ("0"):rep(32), name = name, token = a.token, unique_id = "{" .. name .. "}",
            text_or_url = "/home/a/x.png" }))
        assert.equal(0, ack.error)
        assert.equal(3, ack.status)
        local id = ack.message_id
        local data = res.png(7 * 32768 + 1000) -- 8 chunks: the window refills
        local ra = assert(res.connect(role.port))
        local last = res.upload_image(ra, { uid = a.uid, token = a.token, name = ack.unique_name,
            data = data, message_id = id, sender = ack.fromuid, receiver = ack.touid })
        assert.equal(0, last.error)
        local push = assert(cb:wait_push(1039, 5000))
        assert.same({ error = 0, message_id = id, sender_id = a.uid, receiver_id = b.uid,
            img_name = name, total_size = tostring(#data), thread_id = thread }, push)
        assert.equal(2, message_row(id).status)
        local row = rc.upload_row(name)
        assert.equal(1, row.state)
        assert.equal(data, file_of(role, row.hash))
        local rb = assert(res.connect(role.port))
        local got = assert(res.download_image(rb, b, { name = name, message_id = id,
            sender_id = a.uid, receiver_id = b.uid, total_size = push.total_size }))
        assert.equal(#data, #got)
        assert.equal(data, got)
        -- 1045 (an image of the history) tells its size; the sender may fetch it too
        local info = assert(rb:request(1045, { message_id = id }))
        assert.same({ error = 0, message_id = id, thread_id = thread, sender_id = a.uid,
            recv_id = b.uid, name = name, msg_type = 1, status = 2,
            total_size = tostring(#data) }, info)
        assert.equal(data, (res.download_image(ra, a, { name = name, message_id = id,
            sender_id = a.uid, receiver_id = b.uid })))
        for _, c in ipairs({ ca, cb, ra, rb }) do c:close() end
        -- the chat session over, its token no longer opens a resource connection
        assert(util.wait_until(function()
            local c = assert(res.connect(role.port))
            local r = c:request(1045, { message_id = id, uid = a.uid, token = a.token })
            c:close()
            return r and r.error == 1010
        end, 5000, "the resource session to end with the chat session"))
    end)
end)

describe("resource image upload", function()
    timeout(30000)
    local role

    setup(function() role = rc.start() end)
    teardown(function() role:stop() end)

    it("answers each of the window's 5 chunks once, echoing name, seq, sender and receiver", function()
        local a, b, u = pair()
        u.data = res.png(6 * 32768)
        local c = assert(res.connect(role.port))
        local r1 = assert(c:request(1041, res.image_body(1041, u, 1)))
        assert.equal(0, r1.error)
        assert.equal(1, r1.seq)
        assert.equal(u.name, r1.name)
        assert.equal(a.uid, r1.sender)
        assert.equal(b.uid, r1.receiver)
        for seq = 2, 6 do assert(c:send(1037, res.image_body(1037, u, seq))) end
        for seq = 2, 6 do
            local r = assert(c:wait_push(1038, 5000))
            assert.same({ error = 0, seq = seq, name = u.name, sender = a.uid, receiver = b.uid,
                total_size = tostring(#u.data), trans_size = tostring(seq * 32768),
                last = seq == 6 and 1 or 0, md5 = "", uid = a.uid, last_seq = 6 }, r)
        end
        assert.equal(1, rc.upload_row(u.name).state)
        c:close()
    end)

    it("resumes after a dropped connection: 1043 from the last confirmed chunk gives the exact file", function()
        local _, _, u = pair()
        u.data = res.png(12 * 32768 + 77)
        local c = assert(res.connect(role.port))
        local paused = res.upload_image(c, u, { stop_after = 3 }) -- 1041 + 3 acks, others in flight
        assert.equal(0, paused.error)
        c:close()
        local confirmed = 1
        while paused.acked[confirmed + 1] do confirmed = confirmed + 1 end
        local c2 = assert(res.connect(role.port))
        u.always_token = true -- a new connection names its session again
        local last = res.upload_image(c2, u, { resume_from = confirmed + 1 })
        assert.equal(0, last.error)
        local row = rc.upload_row(u.name)
        assert.equal(1, row.state)
        assert.equal(u.data, file_of(role, row.hash))
        c2:close()
    end)

    -- Whether the role process has upload_id's partial file open (its /proc fd links)
    local function partial_open(upload_id)
        local r = assert(host.proc.run({ "ls", "-l", "/proc/" .. role.proc.pid .. "/fd" }))
        return r.stdout:find("/partial/" .. upload_id .. "\n", 1, true) ~= nil
    end

    it("keeps the partial file open between a connection's chunks, closed when the connection goes and at completion", function()
        local _, _, u = pair()
        u.data = res.png(4 * 32768 + 5)
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        local id = rc.upload_row(u.name).upload_id
        assert.is_true(partial_open(id))
        assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 2))).error)
        assert.is_true(partial_open(id))
        c:close()
        assert(util.wait_until(function() return not partial_open(id) end, 5000, "closed with its connection"))
        local c2 = assert(res.connect(role.port))
        u.always_token = true
        assert.equal(0, assert(c2:request(1043, res.image_body(1043, u, 3))).error)
        assert.is_true(partial_open(id))
        for seq = 4, 5 do assert.equal(0, assert(c2:request(1037, res.image_body(1037, u, seq))).error) end
        assert.is_false(partial_open(id))
        local row = rc.upload_row(u.name)
        assert.equal(1, row.state)
        assert.equal(u.data, file_of(role, row.hash))
        -- a chunk resent after completion is acked and leaves the stored object as it was
        local again = res.image_body(1037, u, 2)
        again.data = host.crypto.base64_encode(("x"):rep(32768))
        assert.equal(0, assert(c2:request(1037, again)).error)
        assert.equal(u.data, file_of(role, row.hash))
        c2:close()
    end)

    it("reads the row again once its state changed: an upload expired and begun again takes chunks into its new partial", function()
        local _, _, u = pair()
        u.data = res.png(3 * 32768)
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 2))).error)
        local id = rc.upload_row(u.name).upload_id
        -- what the sweeper does to an upload past upload_ttl_s, from another connection's view
        assert(db.exec("UPDATE upload SET state = 2 WHERE upload_id = ?", id))
        -- this connection's kept row is not told; a first chunk on another one starts it again
        local c2 = assert(res.connect(role.port))
        assert.equal(0, assert(c2:request(1041, res.image_body(1041, u, 1))).error)
        c2:close()
        for seq = 2, 3 do assert.equal(0, assert(c:request(1037, res.image_body(1037, u, seq))).error) end
        local row = rc.upload_row(u.name)
        assert.equal(1, row.state)
        assert.equal(u.data, file_of(role, row.hash))
        c:close()
    end)

    it("refuses a later chunk on a connection that never named a live session, and another uid", function()
        local a, _, u = pair()
        u.data = res.png(3 * 32768)
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        local intruder = assert(res.connect(role.port))
        local r = assert(intruder:request(1037, res.image_body(1037, u, 2)))
        assert.equal(1014, r.error) -- not logged in: the original took it (only chunk 1 had a token)
        assert.equal(2, r.seq)
        assert.equal(u.name, r.name)
        local stranger = session_user()
        local s = assert(res.connect(role.port))
        local own = rc.name()
        local sid = rc.image_message(stranger, a, 1, own)
        assert.equal(0, assert(s:request(1041, res.image_body(1041, { uid = stranger.uid,
            token = stranger.token, name = own, message_id = sid, receiver = a.uid,
            data = res.png(100) }, 1))).error)
        local r2 = assert(s:request(1037, res.image_body(1037, u, 2)))
        assert.equal(1015, r2.error) -- bound to the stranger: a.uid is not theirs
        local bad_token = assert(res.connect(role.port))
        local body = res.image_body(1043, u, 2)
        body.token = "0123456789abcdef0123456789abcdef"
        assert.equal(1010, assert(bad_token:request(1043, body)).error)
        -- none of them wrote: only chunk 1 is tallied
        assert.equal(1, (rc.tallied(role, u.name)))
        for _, x in ipairs({ c, intruder, s, bad_token }) do x:close() end
    end)

    it("never takes a path for a name, nor another user's name", function()
        local a, b, u = pair()
        u.data = res.png(1000)
        local c = assert(res.connect(role.port))
        for _, bad in ipairs({ "../x.png", "a/b.png", "..png", "", ("x"):rep(80) .. ".png" }) do
            u.name = bad
            local r = assert(c:request(1041, res.image_body(1041, u, 1)))
            assert.equal(1016, r.error)
            assert.equal("name", r.field)
        end
        assert.is_nil(host.fs.kind(role.files .. "/../x.png"))
        -- a's upload under name n; b announces an image with the same name: refused
        local n = rc.name()
        u.name = n
        u.message_id = rc.image_message(a, b, 1, n)
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        local cb = assert(res.connect(role.port))
        local r = assert(cb:request(1041, res.image_body(1041, { uid = b.uid, token = b.token,
            name = n, message_id = rc.image_message(b, a, 1, n), receiver = a.uid,
            data = res.png(2000) }, 1)))
        assert.equal(1108, r.error)
        assert.equal(a.uid, rc.upload_row(n).owner_uid)
        c:close()
        cb:close()
    end)

    it("answers bad numbers with documented errors and goes on serving the connection", function()
        local _, _, u = pair()
        u.data = res.png(3 * 32768)
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        local function try(edit, code, field)
            local body = res.image_body(1037, u, 2)
            edit(body)
            local r = assert(c:request(1037, body))
            assert.equal(code, r.error)
            assert.equal(field, r.field)
        end
        try(function(b) b.seq = "abc" end, 1016, "seq")
        try(function(b) b.seq = -2 end, 1016, "seq")
        try(function(b) b.total_size = "12x" end, 1016, "total_size")
        try(function(b) b.total_size = "-5" end, 1016, "total_size")
        try(function(b) b.trans_size = { 1 } end, 1016, "trans_size")
        try(function(b) b.trans_size = "99999999999999999999" end, 1016, "trans_size")
        try(function(b) b.seq = 4 end, 1104, "seq") -- beyond ceil(total / 32768)
        try(function(b) b.trans_size = "5" end, 1104, "trans_size")
        try(function(b) b.data = "not base64!" end, 1104, "data")
        try(function(b) b.data = host.crypto.base64_encode("short") end, 1104, "data")
        try(function(b) b.total_size = tostring(#u.data + 1) end, 1104, "total_size")
        -- the connection still serves: the rest of the file goes through
        local last = res.upload_image(c, u, { resume_from = 2 })
        assert.equal(0, last.error)
        assert.equal(1, rc.upload_row(u.name).state)
        c:close()
    end)

    it("reads a chunk's body as JSON however it is written, and answers a malformed one 1001", function()
        local _, _, u = pair()
        u.data = res.png(6 * 32768)
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        -- body(seq, data_json): the chunk's fields as JSON text, data_json spliced in as written
        local function body(seq, data_json, before)
            local b = res.image_body(1037, u, seq)
            local b64 = b.data
            b.data = nil
            local rest = host.json.encode(b)
            local member = '"data"' .. data_json(b64)
            if before then return "{" .. member .. "," .. rest:sub(2) end
            return rest:sub(1, -2) .. "," .. member .. "}"
        end
        local function ok(seq, text)
            local r = assert(c:request(1037, text))
            assert.equal(0, r.error, tostring(r.field) .. " " .. text:sub(1, 80))
            assert.equal(seq, r.seq)
        end
        -- escaped slashes and a \u escape in data: still its bytes
        ok(2, body(2, function(b64)
            return ':"' .. b64:gsub("/", "\\/"):gsub("A", "\\u0041", 1) .. '"' end))
        -- whitespace around the colon, data first
        ok(3, body(3, function(b64) return ' \n: "' .. b64 .. '" ' end, true))
        -- data twice: JSON's last one counts (a wrong first one is not taken)
        ok(4, body(4, function(b64)
            return ':"' .. ("QUFB"):rep(300) .. '", "data":"' .. b64 .. '"' end))
        -- a long string nested in another member is that member's, not data
        ok(5, body(5, function(b64)
            return ':"' .. b64 .. '","x":{"data":"' .. ("QUFB"):rep(500) .. '"}' end))
        -- malformed: answered 1001, the connection goes on
        local good = body(6, function(b64) return ':"' .. b64 .. '"' end)
        for _, bad in ipairs({ good:sub(1, -2), good:sub(1, -3) .. "}", good .. "x",
            good:gsub('"data":"', '"data":"\0', 1), good:gsub('"data":"', '"data" "', 1),
            good:gsub('"data":"', '"data":"' .. ("x"):rep(10) .. '\n', 1):gsub('"}$', "}"),
            "[" .. good .. "]", (good:gsub("^{", "{,", 1)), (good:gsub('}$', ',}')) }) do
            local r = assert(c:request(1037, bad))
            assert.equal(1001, r.error, bad:sub(1, 60) .. " ... " .. bad:sub(-60))
        end
        ok(6, good)
        local row = rc.upload_row(u.name)
        assert.equal(1, row.state)
        assert.equal(u.data, file_of(role, row.hash))
        c:close()
    end)

    -- every object file of the store (other tests' too: the role is shared)
    local function objects()
        local n = 0
        for _, prefix in ipairs(host.fs.list(role.files .. "/objects") or {}) do
            n = n + #(host.fs.list(role.files .. "/objects/" .. prefix) or {})
        end
        return n
    end

    it("stores the same content uploaded twice at once only once", function()
        local before = objects()
        local a, b = session_user(), session_user()
        local thread = cluster.befriend(a, b)
        local data = res.png(4 * 32768 + 5)
        local users = { { u = a, to = b }, { u = b, to = a } }
        local tasks = {}
        for i, p in ipairs(users) do
            local name = rc.name()
            users[i].name = name
            local id = rc.image_message(p.u, p.to, thread, name)
            tasks[i] = host.spawn(function()
                local c = assert(res.connect(role.port))
                local last = res.upload_image(c, { uid = p.u.uid, token = p.u.token, name = name,
                    data = data, message_id = id, receiver = p.to.uid })
                c:close()
                return last.error
            end)
        end
        for _, t in ipairs(tasks) do
            local ok, code = t:wait(20000)
            assert.is_true(ok)
            assert.equal(0, code)
        end
        local r1, r2 = rc.upload_row(users[1].name), rc.upload_row(users[2].name)
        assert.equal(1, r1.state)
        assert.equal(r1.hash, r2.hash)
        assert.equal(data, file_of(role, r1.hash))
        assert.equal(1, cluster.count("SELECT COUNT(*) AS n FROM file_object WHERE content_hash = UNHEX(?)", r1.hash))
        assert.equal(before + 1, objects()) -- one object for the two uploads
        for _, r in ipairs({ r1, r2 }) do -- both partials gone
            assert.is_nil(host.fs.kind(role.files .. "/partial/" .. r.upload_id))
        end
    end)
end)

describe("resource image download", function()
    timeout(30000)
    local role

    setup(function() role = rc.start() end)
    teardown(function() role:stop() end)

    -- a complete image from a to b -> a, b, msg
    local function uploaded(n)
        local a, b = session_user(), session_user()
        local thread = cluster.befriend(a, b)
        local name = rc.name("jpg")
        local id = rc.image_message(a, b, thread, name)
        local data = "\255\216\255" .. res.png(n):sub(4)
        local c = assert(res.connect(role.port))
        assert.equal(0, res.upload_image(c, { uid = a.uid, token = a.token, name = name,
            data = data, message_id = id, receiver = b.uid }).error)
        c:close()
        return a, b, { name = name, message_id = id, sender_id = a.uid, receiver_id = b.uid,
            data = data }
    end

    it("refuses a stranger (1106) where the original served anyone, and answers an unknown id", function()
        local _, _, msg = uploaded(40000)
        local stranger = session_user()
        local c = assert(res.connect(role.port))
        local got, r = res.download_image(c, stranger, msg)
        assert.is_nil(got)
        assert.equal(1106, r.error)
        assert.equal(msg.name, r.name)
        assert.is_nil(r.data)
        local info = assert(c:request(1045, { message_id = msg.message_id }))
        assert.equal(1106, info.error)
        local none = assert(c:request(1045, { message_id = 999999999 }))
        assert.equal(1100, none.error) -- the original sent nothing at all
        assert.equal(999999999, none.message_id)
        c:close()
    end)

    it("answers a bare 1045 (the S2 client's history) only from the address of a participant's chat session", function()
        local a, b, msg = uploaded(40000)
        local tokens = require "helpers.scripts_lib" "lib.tokens"
        local function chat_from(u, peer) -- what b's chat login writes (chat.login)
            assert(redis.call("SET", "restoken_" .. u.uid, tokens.session_value(u.token, peer), "EX", 600))
        end
        -- -> the reply, and the connection when keep (else closed)
        local function bare_1045(bind, id, keep)
            local c = assert(res.connect(role.port, bind))
            local r = assert(c:request(1045, { message_id = id or msg.message_id }))
            if not keep then c:close() end
            return r, keep and c or nil
        end
        -- no chat session names an address (as before a login): 1014, nothing told
        assert.same({ error = 1014, message_id = msg.message_id }, (bare_1045()))
        chat_from(b, "127.0.0.1:40000")
        -- another address than the receiver's chat session: 1014
        assert.same({ error = 1014, message_id = msg.message_id }, (bare_1045("127.0.0.2")))
        -- the receiver's address: the 1046 a participant gets, then 1047 with the token
        local info, c = bare_1045("127.0.0.1", nil, true)
        assert.equal(0, info.error)
        assert.equal(a.uid, info.sender_id) -- the S2 client saves it under chatimg/<sender_id>
        assert.equal(msg.name, info.name)
        assert.equal(tostring(#msg.data), info.total_size)
        assert.equal(msg.data, assert(res.download_image(c, b, { name = info.name,
            message_id = info.message_id })))
        c:close()
        -- an image still uploading: 1014 even from there
        local x = session_user()
        chat_from(x, "127.0.0.1:40001")
        local uploading = rc.image_message(x, b, cluster.befriend(x, b), rc.name())
        assert.same({ error = 1014, message_id = uploading }, (bare_1045("127.0.0.1", uploading)))
    end)

    it("serves two downloaders of one file at once, each its own chunks", function()
        local a, b, msg = uploaded(5 * 32768 + 3)
        local ca, cb = assert(res.connect(role.port)), assert(res.connect(role.port))
        local parts = { {}, {} }
        for seq = 1, 6 do -- interleaved: the original's per-name progress record mixed them up
            for i, p in ipairs({ { c = ca, u = a }, { c = cb, u = b } }) do
                local r = assert(p.c:request(1047, { name = msg.name, seq = seq, uid = p.u.uid,
                    token = p.u.token, message_id = msg.message_id, sender_id = a.uid,
                    receiver_id = b.uid, trans_size = "0", total_size = "0" }))
                assert.equal(0, r.error)
                assert.equal(seq == 6, r.is_last)
                assert.equal(tostring(#msg.data), r.total_size)
                parts[i][seq] = host.crypto.base64_decode(r.data)
            end
        end
        assert.equal(msg.data, table.concat(parts[1]))
        assert.equal(msg.data, table.concat(parts[2]))
        local r = assert(ca:request(1047, { name = msg.name, seq = 7, uid = a.uid,
            message_id = msg.message_id }))
        assert.equal(1104, r.error)
        ca:close()
        cb:close()
    end)

    it("serves the exact chunk asked for in any order, whichever chunk was read ahead", function()
        local _, b, msg = uploaded(4 * 32768 + 5)
        local c = assert(res.connect(role.port))
        -- after seq n the role reads n + 1 ahead: asked for next, again, out of order, past the end
        for _, seq in ipairs({ 1, 2, 2, 4, 1, 3, 5, 4, 6, 5, 3 }) do
            local r = assert(c:request(1047, { name = msg.name, seq = seq, uid = b.uid,
                token = b.token, message_id = msg.message_id, sender_id = msg.sender_id,
                receiver_id = b.uid, trans_size = "0", total_size = "0" }))
            if seq == 6 then
                assert.equal(1104, r.error)
            else
                assert.equal(0, r.error)
                assert.equal(msg.data:sub((seq - 1) * 32768 + 1, seq * 32768),
                    host.crypto.base64_decode(r.data))
                assert.equal(seq == 5, r.is_last)
            end
        end
        c:close()
    end)

    it("does not serve an upload that is not complete (1107)", function()
        local a, b = session_user(), session_user()
        local thread = cluster.befriend(a, b)
        local name = rc.name()
        local id = rc.image_message(a, b, thread, name)
        local c = assert(res.connect(role.port))
        local u = { uid = a.uid, token = a.token, name = name, message_id = id, receiver = b.uid,
            data = res.png(3 * 32768) }
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        local cb = assert(res.connect(role.port))
        local _, r = res.download_image(cb, b, { name = name, message_id = id })
        assert.equal(1107, r.error)
        c:close()
        cb:close()
    end)
end)

describe("resource server restart", function()
    timeout(30000)

    it("resumes an upload begun before the resource server restarted", function()
        local role = rc.start()
        local dir = role.files
        local _, _, u = rc.image_upload(9 * 32768 + 9, true)
        local name = u.name
        local c = assert(res.connect(role.port))
        local paused = res.upload_image(c, u, { stop_after = 4 })
        assert.equal(0, paused.error)
        -- the acks in flight are answered before the stop (frames flushed)
        c:close()
        role:stop()
        role = rc.start { dir = dir }
        local confirmed = 1
        while paused.acked[confirmed + 1] do confirmed = confirmed + 1 end
        u.always_token = true
        local c2 = assert(res.connect(role.port))
        assert.equal(0, res.upload_image(c2, u, { resume_from = confirmed + 1 }).error)
        local row = rc.upload_row(name)
        assert.equal(1, row.state)
        assert.equal(u.data, file_of(role, row.hash))
        c2:close()
        role:stop()
    end)

    -- a process that ends between a completion's cut of the tally and its rows leaves a
    -- partial of exactly the image's size, with no tally, and the cut's second name
    it("finishes at its next start a completion cut short after the tally's cut", function()
        local role = rc.start()
        local dir = role.files
        local cases = {}
        for i, how in ipairs({ "cut", "linked", "put back", "no name" }) do
            local _, _, u = rc.image_upload(3 * 32768 + 100 + i, true)
            local c = assert(res.connect(role.port))
            assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
            assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 2))).error)
            c:close()
            cases[how] = u
        end
        role:stop()
        for how, u in pairs(cases) do
            local id = rc.upload_row(u.name).upload_id
            local partial = dir .. "/partial/" .. id
            if how == "put back" then -- (its tally back: two of four pieces)
                assert(host.proc.run({ "ln", partial, partial .. ".cut" }))
            else -- every piece was in, then the tally was cut
                host.fs.write(partial, u.data)
                if how ~= "no name" then assert(host.proc.run({ "ln", partial, partial .. ".cut" })) end
                if how == "linked" then -- linked, synced, its partial's name removed
                    local sha = assert(host.file.blake3(partial))
                    assert(host.file.mkdirs(dir .. "/objects/" .. sha:sub(1, 2)))
                    assert(host.file.link(partial, object_path(dir, sha)))
                    assert(host.file.unlink(partial))
                end
            end
        end
        role = rc.start { dir = dir }
        for how, u in pairs(cases) do
            local row = rc.upload_row(u.name)
            local partial = dir .. "/partial/" .. row.upload_id
            assert(util.wait_until(function() return not host.fs.kind(partial .. ".cut") end, 5000,
                how .. ": the cut's name gone"))
            if how == "cut" or how == "linked" then
                assert.equal(1, rc.upload_row(u.name).state, how)
                assert.equal(u.data, file_of(role, rc.upload_row(u.name).hash), how)
                assert.equal(2, message_row(u.message_id).status, how)
                assert(util.wait_until(function() return not host.fs.kind(partial) end, 5000, how))
            else -- not finished here: still in progress, its partial as it was
                assert.equal(0, row.state, how)
                assert.equal(3, message_row(u.message_id).status, how)
                assert.truthy(host.fs.kind(partial), how)
            end
        end
        -- one the start did not finish: the sweeper finishes it instead of expiring it
        local _, _, late = rc.image_upload(3 * 32768 + 99, true)
        local lc = assert(res.connect(role.port))
        assert.equal(0, assert(lc:request(1041, res.image_body(1041, late, 1))).error)
        lc:close()
        local late_id = rc.upload_row(late.name).upload_id
        local late_partial = dir .. "/partial/" .. late_id
        assert(util.wait_until(function() return host.fs.kind(late_partial) end, 5000, "written"))
        host.fs.write(late_partial, late.data)
        assert(host.proc.run({ "ln", late_partial, late_partial .. ".cut" }))
        assert(db.exec("UPDATE upload SET updated_at = NOW() - INTERVAL 2 HOUR WHERE upload_id = ?", late_id))
        assert(util.wait_until(function() return rc.upload_row(late.name).state ~= 0 end, 5000,
            "the sweeper's tick"))
        assert.equal(1, rc.upload_row(late.name).state)
        assert.equal(late.data, file_of(role, rc.upload_row(late.name).hash))
        -- a completion as usual leaves no cut's name behind
        local _, _, u = rc.image_upload(2 * 32768 + 7, true)
        local c = assert(res.connect(role.port))
        assert.equal(0, res.upload_image(c, u).error)
        c:close()
        local id = rc.upload_row(u.name).upload_id
        assert(util.wait_until(function()
            return not host.fs.kind(dir .. "/partial/" .. id .. ".cut")
                and not host.fs.kind(dir .. "/partial/" .. id)
        end, 5000, "the partial's names gone"))
        role:stop()
    end)
end)

describe("resource uploads from before the tally", function()
    timeout(30000)

    it("moves an upload's Redis bitmap (the progress until 2026-12-07) into its partial's tally at start, and a resume completes it", function()
        local role = rc.start()
        local dir = role.files
        local _, _, u = rc.image_upload(4 * 32768 + 5, true)
        local name = u.name
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 2))).error)
        assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 4))).error)
        c:close()
        role:stop()
        -- as the code before the tally left it: the data alone, chunks 1, 2 and 4 in the bitmap
        local id = rc.upload_row(name).upload_id
        local partial = dir .. "/partial/" .. id
        assert(host.proc.run({ "truncate", "-s", tostring(#u.data), partial }))
        assert(redis.call("SETBIT", "upload_chunks_" .. id, 0, 1))
        assert(redis.call("SETBIT", "upload_chunks_" .. id, 1, 1))
        assert(redis.call("SETBIT", "upload_chunks_" .. id, 3, 1))
        assert(redis.call("DEL", "resource_tally_migrated")) -- (set by the starts before)
        role = rc.start { dir = dir }
        u.always_token = true
        local c2 = assert(res.connect(role.port)) -- chunks 3 and 5 complete it
        for _, seq in ipairs({ 3, 5 }) do
            assert.equal(0, assert(c2:request(1043, res.image_body(1043, u, seq))).error)
        end
        local row = rc.upload_row(name)
        assert.equal(1, row.state)
        assert.equal(u.data, file_of(role, row.hash))
        assert.equal(0, redis.call("EXISTS", "upload_chunks_" .. id))
        assert.truthy(role:log():find("bitmap moved to the partial's tally", 1, true))
        assert.equal("1", redis.call("GET", "resource_tally_migrated")) -- later starts: skipped
        c2:close()
        role:stop()
    end)
end)

describe("resource objects stored before BLAKE3", function()
    timeout(30000)

    -- the SHA-256 of a file (coreutils: what named objects until sql/006_blake3.sql)
    local function sha256_of(path)
        return assert(host.proc.run({ "sha256sum", path })).stdout:match("^(%x+)")
    end

    -- five complete image uploads of the same a and b, the 2nd and 3rd of the same bytes
    -- -> a, b, the uploads
    local function complete_uploads(role)
        local a, b = session_user(), session_user()
        local thread = cluster.befriend(a, b)
        local out = {}
        local same = res.png(3 * 32768 + 11)
        for i, data in ipairs({ res.png(2 * 32768 + 5), same, same, res.png(32768 + 3),
            res.png(32768 + 4) }) do
            local name = rc.name()
            local u = { uid = a.uid, token = a.token, name = name, receiver = b.uid, data = data,
                message_id = rc.image_message(a, b, thread, name) }
            local c = assert(res.connect(role.port))
            assert.equal(0, res.upload_image(c, u).error, "upload " .. i)
            c:close()
            out[i] = u
        end
        return a, b, out
    end

    -- the object of upload u made one from before: named by its SHA-256, its rows saying so;
    -- copy: a file of its own (the last of two uploads of the same bytes, stored twice then)
    local function make_old(dir, u, copy)
        local new = rc.upload_row(u.name).hash
        local path = object_path(dir, new)
        local old = sha256_of(path)
        local old_path = object_path(dir, old)
        assert(host.file.mkdirs(dir .. "/objects/" .. old:sub(1, 2)))
        if copy then
            assert(host.proc.run({ "cp", path, old_path }))
            assert(db.exec("INSERT INTO file_object (content_hash, algo, size, mime) "
                .. "VALUES (UNHEX(?), 0, ?, 'image/png')", old, #u.data))
        else
            assert(host.file.link(path, old_path))
            assert(host.file.unlink(path))
            assert(db.exec("UPDATE file_object SET content_hash = UNHEX(?), algo = 0 "
                .. "WHERE content_hash = UNHEX(?)", old, new))
        end
        assert(db.exec("UPDATE upload SET content_hash = UNHEX(?) WHERE name = ?", old, u.name))
        return old, old_path, new
    end

    it("renames them to their BLAKE3 at start, the old name kept for the grace, downloads going on", function()
        local role = rc.start()
        local dir = role.files
        local a, b, ups = complete_uploads(role)
        role:stop()
        local old1, old_path1 = make_old(dir, ups[1])
        local old3, old_path3 = make_old(dir, ups[3], true)
        -- what an end of the process leaves mid-rename: the new name linked, the rows not
        -- moved (4); the rows moved, the old name and row still there (5)
        local old4, old_path4, new4 = make_old(dir, ups[4])
        assert(host.file.link(old_path4, object_path(dir, new4)))
        local old5, old_path5, new5 = make_old(dir, ups[5])
        assert(host.file.link(old_path5, object_path(dir, new5)))
        assert(db.exec("INSERT INTO file_object (content_hash, algo, size, mime) "
            .. "VALUES (UNHEX(?), 1, ?, 'image/png')", new5, #ups[5].data))
        assert(db.exec("UPDATE upload SET content_hash = UNHEX(?) WHERE name = ?", new5, ups[5].name))
        -- a row whose file is gone and that no upload names (left by an end mid-rename)
        local dangling = host.crypto.random_hex(32)
        assert(db.exec("INSERT INTO file_object (content_hash, algo, size, mime) "
            .. "VALUES (UNHEX(?), 0, 1, 'image/png')", dangling))
        assert(redis.call("DEL", "resource_blake3_renamed")) -- (set by the starts before)
        local function left(hash)
            return tonumber(assert(db.query("SELECT COUNT(*) AS n FROM file_object "
                .. "WHERE content_hash = UNHEX(?)", hash))[1].n)
        end
        role = rc.start { dir = dir, resource = { rename_grace_ms = 3000 } }
        -- renamed: the rows name the BLAKE3 name at once, the old name still there
        assert(util.wait_until(function() return rc.upload_row(ups[1].name).hash ~= old1 end,
            5000, "the upload's row renamed"))
        local new1 = rc.upload_row(ups[1].name).hash
        assert.equal(assert(host.file.blake3(old_path1)), new1)
        assert.equal(ups[1].data, file_of(role, new1))
        assert.truthy(host.fs.kind(old_path1), "the old name kept during the grace")
        -- a download meanwhile: the rows' name, the content's mime
        local c = assert(res.connect(role.port))
        local msg = { name = ups[1].name, message_id = ups[1].message_id, sender_id = a.uid,
            receiver_id = b.uid }
        assert.equal(ups[1].data, (res.download_image(c, b, msg)))
        -- a completion of the same content whose sync failed removes the name it linked,
        -- the one this rename found: linked again from the old name before that one goes
        local new_path1 = object_path(dir, new1)
        assert(host.file.unlink(new_path1))
        -- after the grace: the old names and rows gone; the copy of content stored again
        -- since (under its BLAKE3 name) is the same file as that one's
        assert(util.wait_until(function() return redis.call("GET", "resource_blake3_renamed") == "1" end,
            10000, "every object renamed"))
        assert.equal(ups[1].data, host.fs.read(new_path1))
        for _, path in ipairs({ old_path1, old_path3, old_path4, old_path5 }) do
            assert.is_nil(host.fs.kind(path), path)
        end
        assert.same({ 0, 0, 0, 0, 0 }, { left(old1), left(old3), left(old4), left(old5), left(dangling) })
        for i = 4, 5 do
            local row = rc.upload_row(ups[i].name)
            assert.equal(({ [4] = new4, [5] = new5 })[i], row.hash)
            assert.equal(ups[i].data, file_of(role, row.hash))
            assert.equal(1, left(row.hash))
        end
        assert.equal(rc.upload_row(ups[2].name).hash, rc.upload_row(ups[3].name).hash)
        assert.same({ 1, 1 }, { left(new1), left(rc.upload_row(ups[3].name).hash) })
        assert.equal(1, tonumber(assert(db.query("SELECT algo FROM file_object WHERE "
            .. "content_hash = UNHEX(?)", new1))[1].algo))
        msg = { name = ups[3].name, message_id = ups[3].message_id, sender_id = a.uid,
            receiver_id = b.uid }
        assert.equal(ups[3].data, (res.download_image(c, b, msg)))
        assert.truthy(role:log():find("4 object(s) stored before BLAKE3 renamed", 1, true))
        c:close()
        role:stop()
    end)

    it("leaves an object from before whose file is missing while uploads name it, and tries again later", function()
        local role = rc.start()
        local dir = role.files
        local _, _, u = pair()
        u.data = res.png(32768 + 21)
        local c = assert(res.connect(role.port))
        assert.equal(0, res.upload_image(c, u).error)
        c:close()
        role:stop()
        local old, old_path = make_old(dir, u)
        assert(host.file.unlink(old_path))
        assert(redis.call("DEL", "resource_blake3_renamed"))
        role = rc.start { dir = dir, resource = { rename_grace_ms = 0 } }
        assert(util.wait_until(function()
            return role:log():find("object " .. old .. " stored before BLAKE3 not renamed: "
                .. old_path .. " is missing", 1, true) ~= nil
        end, 10000, "the missing file logged"))
        assert.equal(old, rc.upload_row(u.name).hash)
        assert.equal(0, tonumber(assert(db.query("SELECT algo FROM file_object WHERE "
            .. "content_hash = UNHEX(?)", old))[1].algo))
        assert.is_nil(redis.call("GET", "resource_blake3_renamed")) -- (not done: the next start again)
        role:stop()
    end)
end)

describe("resource kept downloads", function()
    timeout(30000)

    it("reads a kept row again when its object cannot be opened (renamed since)", function()
        local role = rc.start()
        local a, b, u = pair()
        u.data = res.png(2 * 32768 + 9)
        local c = assert(res.connect(role.port))
        assert.equal(0, res.upload_image(c, u).error)
        c:close()
        local d = assert(res.connect(role.port))
        local msg = { name = u.name, message_id = u.message_id, sender_id = a.uid,
            receiver_id = b.uid }
        -- the size asked for: the session keeps the row (and opens the file at chunk 1)
        assert.equal(0, assert(d:request(1045, { message_id = u.message_id, uid = b.uid,
            token = b.token })).error)
        -- meanwhile the object takes another name, as resource.migrate renames one
        local dir, old = role.files, rc.upload_row(u.name).hash
        local new = host.crypto.random_hex(32)
        assert(host.file.mkdirs(dir .. "/objects/" .. new:sub(1, 2)))
        assert(host.file.link(object_path(dir, old), object_path(dir, new)))
        assert(db.exec("INSERT INTO file_object (content_hash, algo, size, mime) "
            .. "VALUES (UNHEX(?), 1, ?, 'image/png')", new, #u.data))
        assert(db.exec("UPDATE upload SET content_hash = UNHEX(?) WHERE name = ?", new, u.name))
        assert(host.file.unlink(object_path(dir, old)))
        assert.equal(u.data, (res.download_image(d, b, msg)))
        d:close()
        role:stop()
    end)
end)

describe("resource session recheck", function()
    timeout(30000)

    -- a bound connection whose chat session then ends -> the reply to its next chunk
    local function after_logout(role)
        local a, _, u = rc.image_upload(3 * 32768)
        local name = u.name
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        assert(redis.call("DEL", "restoken_" .. a.uid)) -- the chat session ended
        local r = assert(c:request(1037, res.image_body(1037, u, 2)))
        c:close()
        return r, name
    end

    it("refuses the next request of a connection whose chat session ended (session_recheck_ms 0)", function()
        local role = rc.start { resource = { session_recheck_ms = 0 } }
        local r, name = after_logout(role)
        assert.equal(1010, r.error)
        assert.equal(1, (rc.tallied(role, name)))
        role:stop()
    end)

    it("keeps a bound connection for session_recheck_ms without asking Redis again", function()
        local role = rc.start { resource = { session_recheck_ms = 3600000 } }
        local r, name = after_logout(role)
        assert.equal(0, r.error)
        assert.equal(2, (rc.tallied(role, name)))
        role:stop()
    end)
end)

-- What a connection keeps between its chunks, counted in MariaDB's Com_select: a role
-- without the sweeper (its SELECT every tick), and no other role running meanwhile.
describe("resource rows kept between chunks", function()
    timeout(30000)
    local role

    setup(function() role = rc.start { resource = { sweep_interval_ms = 3600000 } } end)
    teardown(function() role:stop() end)

    local function selects()
        return tonumber(assert(db.query("SHOW GLOBAL STATUS LIKE 'Com_select'"))[1].Value)
    end

    -- a complete image from a to b -> a, b, msg
    local function uploaded(n)
        local a, b, u = pair()
        u.data = res.png(n)
        local c = assert(res.connect(role.port))
        assert.equal(0, res.upload_image(c, u).error)
        c:close()
        return a, b, { name = u.name, message_id = u.message_id, sender_id = a.uid,
            receiver_id = b.uid, data = u.data }
    end

    it("reads the upload row once per connection, not for every chunk", function()
        local _, _, u = pair()
        u.data = res.png(8 * 32768)
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 2))).error)
        local before = selects()
        for seq = 3, 7 do assert.equal(0, assert(c:request(1037, res.image_body(1037, u, seq))).error) end
        assert.equal(before, selects())
        assert.equal(0, assert(c:request(1037, res.image_body(1037, u, 8))).error)
        assert.equal(1, rc.upload_row(u.name).state)
        c:close()
        -- session_recheck_ms 0: the kept row is read again for every chunk
        local eager = rc.start { resource = { sweep_interval_ms = 3600000, session_recheck_ms = 0 } }
        local _, _, u2 = pair()
        u2.data = res.png(4 * 32768)
        local c2 = assert(res.connect(eager.port))
        assert.equal(0, assert(c2:request(1041, res.image_body(1041, u2, 1))).error)
        before = selects()
        for seq = 2, 3 do assert.equal(0, assert(c2:request(1037, res.image_body(1037, u2, seq))).error) end
        assert.is_true(selects() - before >= 2)
        c2:close()
        eager:stop()
    end)

    it("keeps the object open and queries nothing between a downloader's chunks; another file or a stranger is checked anew", function()
        local a, b, msg = uploaded(6 * 32768)
        local sha = rc.upload_row(msg.name).hash
        local function object_open()
            local r = assert(host.proc.run({ "ls", "-l", "/proc/" .. role.proc.pid .. "/fd" }))
            return r.stdout:find("/objects/" .. sha:sub(1, 2) .. "/" .. sha .. "\n", 1, true) ~= nil
        end
        local body = { name = msg.name, uid = b.uid, token = b.token, message_id = msg.message_id,
            sender_id = a.uid, receiver_id = b.uid }
        local c = assert(res.connect(role.port))
        local parts = {}
        local before
        for seq = 1, 6 do
            body.seq = seq
            local r = assert(c:request(1047, body))
            assert.equal(0, r.error)
            parts[seq] = host.crypto.base64_decode(r.data)
            if seq == 1 then
                assert.is_true(object_open())
                before = selects()
            end
        end
        assert.equal(before, selects())
        assert.equal(msg.data, table.concat(parts))
        -- a name that is not the message's is refused though the file is kept, and another
        -- image is checked anew for this uid
        body.name = rc.name()
        assert.equal(1016, assert(c:request(1047, body)).error)
        local _, _, other = uploaded(1000)
        local r = assert(c:request(1047, { name = other.name, seq = 1, uid = b.uid,
            message_id = other.message_id }))
        assert.equal(1106, r.error) -- b is not a participant of that one
        c:close()
        assert(util.wait_until(function() return not object_open() end, 5000, "closed with its connection"))
    end)
end)

describe("resource.uploads complete with the file's name promised", function()
    local uploads = require "helpers.scripts_lib" "resource.uploads"

    -- a new upload row of a user -> its row
    local function new_upload()
        local a = cluster.user()
        return assert(uploads.create { kind = uploads.AVATAR, name = rc.name(), owner_uid = a.uid,
            total_size = 10, md5 = "" })
    end

    it("sums a user's uploads for the quota from an index alone, whatever their number", function()
        local a = cluster.user()
        for i = 1, 30 do
            assert(db.exec("INSERT INTO upload (kind, name, owner_uid, total_size, state) "
                .. "VALUES (2, ?, ?, ?, ?)", rc.name(), a.uid, 1000 + i, i % 3))
        end
        assert.same({ 20310, 10 },
            { uploads.usage(a.uid) }) -- (the 20 of states 0 and 1: 10 of them running)
        local plan = assert(db.query("EXPLAIN " .. uploads.USAGE_SQL, a.uid))
        assert.equal(1, #plan)
        assert.equal("idx_owner_usage", plan[1].key)
        assert.truthy(tostring(plan[1].Extra):find("Using index", 1, true), host.json.encode(plan))
    end)

    it("begins the rows' transaction before the file is named, rolled back if it never is", function()
        for _, name_it in ipairs({ true, false }) do
            local row = new_upload()
            local sha = host.crypto.random_hex(32)
            local named, ran_first = host.promise(), false
            local done = host.spawn(uploads.complete, row.upload_id, function()
                return (named:wait(5000))
            end, nil, function(q)
                ran_first = true -- (before the object is known)
                assert(q.exec("UPDATE user SET icon = ? WHERE uid = ?", row.name, row.owner_uid))
            end)
            host.timer.sleep(50)
            assert.is_true(ran_first)
            assert.is_false(done:done())
            named:resolve(name_it and { hash = sha, size = 10, mime = "image/png" } or false)
            local _, ok, err = done:wait(5000)
            local icon = assert(host.db.query("SELECT icon FROM user WHERE uid = ?", row.owner_uid))[1].icon
            if name_it then
                assert(ok, err)
                assert.same({ 1, sha, row.name }, { rc.upload_row(row.name, uploads.AVATAR).state,
                    rc.upload_row(row.name, uploads.AVATAR).hash, icon })
            else
                assert.is_nil(ok)
                assert.matches("not named", err)
                assert.equal(0, rc.upload_row(row.name, uploads.AVATAR).state)
                assert.are_not.equal(row.name, icon)
            end
        end
    end)

    it("writes the rows while the file is named and commits them once it is, or rolls them back", function()
        -- with the completion's other statements (the avatar as the user's icon) in the same
        -- transaction: committed, or rolled back, together
        local function icon(uid)
            return assert(host.db.query("SELECT icon FROM user WHERE uid = ?", uid))[1].icon
        end
        for _, named_ok in ipairs({ true, false }) do
            local row = new_upload()
            local icon_before = icon(row.owner_uid)
            local sha = host.crypto.random_hex(32)
            local named = host.promise()
            local done = host.spawn(uploads.complete, row.upload_id, { hash = sha, size = 10,
                mime = "image/png" }, named, function(q)
                    assert(q.exec("UPDATE user SET icon = ? WHERE uid = ?", row.name, row.owner_uid))
                    return "also's value"
                end)
            -- its statements ran; until the promise, nothing is committed (another connection
            -- reads the row as it was)
            host.timer.sleep(100)
            assert.is_false(done:done())
            assert.equal(0, rc.upload_row(row.name, uploads.AVATAR).state)
            named:resolve(named_ok)
            local _, ok, err = done:wait(5000)
            local now = rc.upload_row(row.name, uploads.AVATAR)
            assert.equal(named_ok and row.name or icon_before, icon(row.owner_uid))
            local objects = assert(host.db.query("SELECT COUNT(*) AS n FROM file_object WHERE content_hash = UNHEX(?)", sha))[1].n
            if named_ok then
                assert(ok, err)
                assert.equal("also's value", err) -- (complete's second value)
                assert.same({ 1, sha, 1 }, { now.state, now.hash, tonumber(objects) })
            else
                assert.is_nil(ok)
                assert.matches("not named", err)
                assert.same({ 0, 0 }, { now.state, tonumber(objects) })
                assert.is_nil(now.hash)
            end
        end
    end)
end)

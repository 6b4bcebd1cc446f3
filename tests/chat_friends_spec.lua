-- The chat role's search, friend applications and acceptance (docs/protocol.md §6):
-- public profiles only, pushes 1011/1015 to a user on the other chat server, the rows an
-- acceptance writes, one private thread per pair however often and concurrently it is
-- asked, identity from the session only, and login lists cut to fit one frame.
local host = require "host"
local chat_client = require "helpers.chat_client"
local cluster = require "helpers.chat_cluster"
local db = host.db

local count = cluster.count

-- Each case: { msg_id, request, expected reply }
local function expect_all(c, cases)
    for i, case in ipairs(cases) do
        assert.same(case[3], c:request(case[1], case[2]), "case " .. i)
    end
end

local function one_value(sql, ...)
    local row = assert(db.query(sql, ...))[1]
    return row and row.v
end

describe("chat friends", function()
    local cl, chat1, chat2

    setup(function()
        cl = cluster.start()
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    teardown(function() cl:stop() end)

    describe("search (1007)", function()
        it("finds a user by uid and by name and never answers a password or an e-mail", function()
            local me = cluster.user()
            local other = cluster.user { nick = "Otto", desc = "hello there", sex = 1 }
            local c = cluster.login(chat1.port, me)
            local expected = { error = 0, uid = other.uid, name = other.name, nick = "Otto",
                desc = "hello there", sex = 1, icon = other.icon }
            local texts = { tostring(other.uid), other.name, other.name:upper(), other.uid }
            for _, text in ipairs(texts) do
                assert(c:send(1007, { uid = text }))
                local id, raw = c.conn:read_frame(5000)
                assert.equal(1008, id)
                assert.is_nil(raw:find("pwd", 1, true))
                assert.is_nil(raw:find("email", 1, true))
                assert.is_nil(raw:find("@", 1, true))
                assert.same(expected, host.json.decode(raw))
            end
            c:close()
        end)

        it("answers 1011 for nobody and 1016 for an empty text", function()
            local me = cluster.user()
            local c = cluster.login(chat1.port, me)
            expect_all(c, {
                { 1007, { uid = "nobody_" .. host.crypto.random_hex(4) }, { error = 1011 } },
                { 1007, { uid = "99999999999999999999" }, { error = 1011 } },
                { 1007, { uid = ("x"):rep(500) }, { error = 1011 } },
                { 1007, { uid = "" }, { error = 1016, field = "uid" } },
                { 1007, { uid = { 1 } }, { error = 1001, field = "uid" } },
            })
            c:close()
        end)
    end)

    describe("apply (1009) and accept (1013)", function()
        it("pushes an application to the target on the other server, the acceptance back",
        function()
            local a, b = cluster.user { nick = "Alice" }, cluster.user { nick = "Bob" }
            local ca = cluster.login(chat1.port, a)
            local cb = cluster.login(chat2.port, b)
            assert.same({ error = 0 }, ca:request(1009, { uid = a.uid, applyname = "hi, I am Alice",
                bakname = "bobby", touid = b.uid }))
            assert.same({ error = 0, applyuid = a.uid, name = a.name, desc = "hi, I am Alice",
                icon = a.icon, nick = "Alice", sex = 0 }, cb:wait_push(1011))
            local apply = assert(db.query("SELECT status, descs, back_name FROM friend_apply"
                .. " WHERE from_uid = ? AND to_uid = ?", a.uid, b.uid))[1]
            assert.same({ status = 0, descs = "hi, I am Alice", back_name = "bobby" }, apply)

            local r = assert(cb:request(1013, { fromuid = b.uid, touid = a.uid, back = "ally" }))
            assert.same({ 0, a.uid, a.name, "Alice", a.icon, 0 },
                { r.error, r.uid, r.name, r.nick, r.icon, r.sex })
            assert.equal(2, #r.chat_datas)
            local push = assert(ca:wait_push(1015))
            assert.same({ 0, b.uid, a.uid, b.name, "Bob", b.icon, 0 },
                { push.error, push.fromuid, push.touid, push.name, push.nick, push.icon, push.sex })
            assert.equal(2, #push.chat_datas)

            -- the rows: application accepted, two friend rows with the remarks, one thread,
            -- the greeting messages in it
            local u1, u2 = math.min(a.uid, b.uid), math.max(a.uid, b.uid)
            local threads = assert(db.query("SELECT thread_id FROM private_chat"
                .. " WHERE user1_id = ? AND user2_id = ?", u1, u2))
            assert.equal(1, #threads)
            local thread = threads[1].thread_id
            assert.equal(1, one_value("SELECT status AS v FROM friend_apply"
                .. " WHERE from_uid = ? AND to_uid = ?", a.uid, b.uid))
            local back = "SELECT back AS v FROM friend WHERE self_id = ? AND friend_id = ?"
            assert.equal("ally", one_value(back, b.uid, a.uid))
            assert.equal("bobby", one_value(back, a.uid, b.uid))
            local msgs = assert(db.query("SELECT message_id, sender_id, recv_id, content"
                .. " FROM chat_message WHERE thread_id = ? ORDER BY message_id", thread))
            local m1, m2 = msgs[1], msgs[2]
            assert.same({ a.uid, b.uid, "hi, I am Alice" },
                { m1.sender_id, m1.recv_id, m1.content })
            assert.same({ b.uid, a.uid, "We are friends now!" },
                { m2.sender_id, m2.recv_id, m2.content })
            for i, d in ipairs({ r.chat_datas, push.chat_datas }) do
                for k = 1, 2 do
                    local m, e = msgs[k], d[k]
                    assert.same({ m.message_id, m.sender_id, thread, m.content, 2, "" },
                        { e.msg_id, e.sender, e.thread_id, e.msg_content, e.status, e.unique_id },
                        "list " .. i .. " item " .. k)
                    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$", d[k].chat_time)
                end
            end
            -- accepting again: nothing pending any more
            assert.same({ error = 1015, field = "touid" },
                cb:request(1013, { fromuid = b.uid, touid = a.uid, back = "x" }))

            -- the next login lists the friend with its remark and the accepted application
            cb:close()
            local again, login = cluster.login(chat2.port, b)
            assert.same({ { uid = a.uid, name = a.name, nick = "Alice", icon = a.icon, sex = 0,
                desc = "", back = "ally" } }, login.friend_list)
            assert.same({ { uid = a.uid, name = a.name, nick = "Alice", icon = a.icon, sex = 0,
                desc = "hi, I am Alice", status = 1 } }, login.apply_list)
            again:close()
            ca:close()
        end)

        it("refuses oneself (1016), unknown users (1011), another uid and no application (1015)",
        function()
            local a, b = cluster.user(), cluster.user()
            local c = cluster.login(chat1.port, a)
            local nobody = 2100000000
            expect_all(c, {
                { 1009, { uid = a.uid, touid = a.uid }, { error = 1016, field = "touid" } },
                { 1009, { uid = a.uid, touid = nobody }, { error = 1011 } },
                { 1009, { uid = b.uid, touid = a.uid }, { error = 1015, field = "uid" } },
                { 1009, { uid = a.uid }, { error = 1016, field = "touid" } },
                { 1009, { uid = a.uid, touid = b.uid, applyname = ("x"):rep(300) },
                    { error = 1016, field = "applyname" } },
                { 1013, { fromuid = a.uid, touid = b.uid }, { error = 1015, field = "touid" } },
                { 1013, { fromuid = b.uid, touid = a.uid }, { error = 1015, field = "fromuid" } },
                { 1013, { fromuid = a.uid, touid = a.uid }, { error = 1016, field = "touid" } },
                { 1013, { fromuid = a.uid, touid = nobody }, { error = 1011 } },
            })
            assert.equal(0, count("SELECT COUNT(*) AS n FROM friend WHERE self_id = ?", a.uid))
            c:close()
        end)

        it("delivers an application to an offline user at the next login", function()
            local a, b = cluster.user(), cluster.user()
            local c = cluster.login(chat1.port, a)
            assert.same({ error = 0 },
                c:request(1009, { uid = a.uid, touid = b.uid, applyname = "later" }))
            local cb, login = cluster.login(chat2.port, b)
            assert.equal(1, #login.apply_list)
            assert.same({ a.uid, "later", 0 },
                { login.apply_list[1].uid, login.apply_list[1].desc, login.apply_list[1].status })
            c:close()
            cb:close()
        end)
    end)

    describe("private chats (1027)", function()
        -- Pairs of users on two servers; each user sends its requests back to back without
        -- waiting, so the two sides of every pair and all pairs race on the servers.
        local function race(n, prepare, requests)
            local races = {}
            for i = 1, n do
                local a, b = cluster.user(), cluster.user()
                local r = { a = a, b = b, ca = cluster.login(chat1.port, a),
                    cb = cluster.login(chat2.port, b) }
                prepare(r)
                races[i] = r
            end
            for _, r in ipairs(races) do
                for _, side in ipairs({ { r.ca, r.a, r.b }, { r.cb, r.b, r.a } }) do
                    for _, req in ipairs(requests(side[2], side[3])) do
                        assert(side[1]:send(req[1], req[2]))
                    end
                end
            end
            return races
        end

        local function one_thread(r)
            local u1, u2 = math.min(r.a.uid, r.b.uid), math.max(r.a.uid, r.b.uid)
            local threads = assert(db.query("SELECT thread_id FROM private_chat"
                .. " WHERE user1_id = ? AND user2_id = ?", u1, u2))
            assert.equal(1, #threads)
            return threads[1].thread_id
        end

        it("creates one thread per pair when both accept and ask for it at once", function()
            local races = race(10, function(r)
                assert.equal(0, r.ca:request(1009, { uid = r.a.uid, touid = r.b.uid }).error)
                assert.equal(0, r.cb:request(1009, { uid = r.b.uid, touid = r.a.uid }).error)
            end, function(me, other)
                return { { 1013, { fromuid = me.uid, touid = other.uid } },
                    { 1027, { uid = me.uid, other_id = other.uid } },
                    { 1027, { uid = me.uid, other_id = other.uid } } }
            end)
            for _, r in ipairs(races) do
                local accepted, ids = 0, {}
                for _, c in ipairs({ r.ca, r.cb }) do
                    local acc = assert(c:wait_push(1014))
                    if acc.error == 0 then
                        accepted = accepted + 1
                        ids[acc.thread_id] = true
                    else
                        assert.same({ error = 1015, field = "touid" }, acc)
                    end
                    for _ = 1, 2 do ids[assert(c:wait_push(1028)).thread_id] = true end
                end
                assert.truthy(accepted >= 1)
                assert.same({ [one_thread(r)] = true }, ids)
                assert.equal(4, count("SELECT COUNT(*) AS n FROM friend"
                    .. " WHERE self_id IN (?, ?)", r.a.uid, r.b.uid) * 2)
                r.ca:close()
                r.cb:close()
            end
        end)

        it("creates one thread per pair when friends without one ask for it at once", function()
            local races = race(10, function(r)
                cluster.befriend(r.a, r.b, { thread = false })
            end, function(me, other)
                local req = { 1027, { uid = me.uid, other_id = other.uid } }
                return { req, req, req }
            end)
            for _, r in ipairs(races) do
                local ids = {}
                for _, side in ipairs({ { r.ca, r.a, r.b }, { r.cb, r.b, r.a } }) do
                    for _ = 1, 3 do
                        local rsp = assert(side[1]:wait_push(1028))
                        assert.same({ 0, side[2].uid, side[3].uid },
                            { rsp.error, rsp.uid, rsp.other_id })
                        ids[rsp.thread_id] = true
                    end
                end
                assert.same({ [one_thread(r)] = true }, ids)
                r.ca:close()
                r.cb:close()
            end
        end)

        it("answers the existing thread again and 1015 for a non-friend", function()
            local a, b, c = cluster.user(), cluster.user(), cluster.user()
            local thread = cluster.befriend(a, b)
            local ca = cluster.login(chat1.port, a)
            assert.same({ error = 0, uid = a.uid, other_id = b.uid, thread_id = thread },
                ca:request(1027, { uid = a.uid, other_id = b.uid }))
            expect_all(ca, {
                { 1027, { uid = a.uid, other_id = c.uid }, { error = 1015, field = "other_id" } },
                { 1027, { uid = a.uid, other_id = a.uid }, { error = 1016, field = "other_id" } },
                { 1027, { uid = b.uid, other_id = a.uid }, { error = 1015, field = "uid" } },
            })
            ca:close()
        end)
    end)

    describe("login lists", function()
        it("cuts a friend list that would not fit in one frame and marks it", function()
            local me = cluster.user()
            local n, nick, icon = 600, ("n"):rep(60), ("i"):rep(200)
            local values, params = {}, {}
            local tag = host.crypto.random_hex(4)
            local function add(...)
                for _, v in ipairs({ ... }) do params[#params + 1] = v end
            end
            for i = 1, n do
                values[i] = "(?, ?, 'x', ?, ?)"
                local name = ("big%d_%s"):format(i, tag)
                add(name, name .. "@example.com", nick, icon)
            end
            assert(db.exec("INSERT INTO user (name, email, pwd_hash, nick, icon)"
                .. " VALUES " .. table.concat(values, ", "), unpack(params)))
            -- the uids as given (not consecutive numbers: tools/test.sh takes every third)
            local users = assert(db.query("SELECT uid FROM user WHERE name LIKE ? ORDER BY uid",
                "big%_" .. tag))
            assert.equal(n, #users)
            local rows = {}
            params = {}
            for i = 1, n do
                rows[i] = "(?, ?, ?)"
                add(me.uid, users[i].uid, "remark")
            end
            assert(db.exec("INSERT INTO friend (self_id, friend_id, back) VALUES "
                .. table.concat(rows, ", "), unpack(params)))
            local c = assert(chat_client.connect(chat1.port))
            assert(c:send(1005, { uid = me.uid, token = me.token }))
            -- the precondition: the whole list, as JSON, would not fit in one frame
            local all = assert(db.query("SELECT u.uid, u.name, u.nick, u.icon, u.sex, u.`desc`,"
                .. " f.back FROM friend f JOIN user u ON u.uid = f.friend_id WHERE f.self_id = ?",
                me.uid))
            assert.equal(n, #all)
            assert.truthy(#host.json.encode(all) > 65535, #host.json.encode(all))
            local id, raw = c.conn:read_frame(5000) -- a frame body is at most 65535 bytes
            assert.equal(1006, id)
            local r = host.json.decode(raw)
            assert.equal(0, r.error)
            assert.is_true(r.friend_list_more)
            assert.truthy(#r.friend_list > 100 and #r.friend_list < n, #r.friend_list)
            assert.equal(users[1].uid, r.friend_list[1].uid)
            c:close()
        end)
    end)
end)

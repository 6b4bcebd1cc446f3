-- Group chats over two chat servers (docs/protocol.md §6.6): a group message is stored once
-- and reaches every other online member exactly once, in order per sender, wherever they
-- are; offline members read it from history from their joined_message_id with unread
-- counts in 1026; membership changes are pushed (1069) to the members they concern;
-- removed members get nothing more and cannot read; a non-member gets the answer a group
-- that does not exist gets; the limits at their boundary; concurrent invites and leaves
-- keep member_count exact; a reloaded rule applies at the next request.
local host = require "host"
local util = require "helpers.util"
local cluster = require "helpers.chat_cluster"
local db = host.db

local MAX_MEMBERS, MAX_PER_USER, NAME_MAX, UNREAD_MAX, CACHE_MAX = 6, 3, 16, 3, 2

local function texts(prefix, n)
    local out = {}
    for i = 1, n do out[i] = { content = prefix .. i, unique_id = "{" .. prefix .. i .. "}" } end
    return out
end

local function uids_of(users)
    local out = {}
    for i, u in ipairs(users) do out[i] = u.uid end
    return out
end

local function members_row(thread)
    return cluster.count("SELECT COUNT(*) AS n FROM group_member WHERE thread_id = ?", thread),
        assert(db.query("SELECT member_count FROM group_chat WHERE thread_id = ?", thread))[1]
end

describe("chat groups", function()
    local cl, chat1, chat2

    setup(function()
        cl = cluster.start { chat = { group_max_members = MAX_MEMBERS,
            group_max_per_user = MAX_PER_USER, group_name_max_bytes = NAME_MAX,
            unread_count_max = UNREAD_MAX } }
        chat1, chat2 = cl.chats[1], cl.chats[2]
    end)

    teardown(function() cl:stop() end)

    -- owner and n friends of the owner; -> owner, the friends
    local function people(n)
        local owner, others = cluster.user(), {}
        for i = 1, n do
            others[i] = cluster.user()
            cluster.befriend(owner, others[i])
        end
        return owner, others
    end

    -- Logs users in, alternately on chat1 and chat2: -> clients
    local function spread(users)
        local out = {}
        for i, u in ipairs(users) do
            out[i] = cluster.login((i % 2 == 1 and chat1 or chat2).port, u)
        end
        return out
    end

    local function create(c, name, others)
        local r = assert(c:request(1061, { name = name, members = uids_of(others) }))
        assert.equal(0, r.error, host.json.encode(r))
        return r.thread_id, r
    end

    local function close_all(clients)
        for _, c in ipairs(clients) do c:close() end
    end

    it("delivers each message once to every other member on both servers, in order per sender",
        function()
            local owner, others = people(4)
            local users = { owner, others[1], others[2], others[3], others[4] }
            local cs = spread(users)
            local thread, created = create(cs[1], "five", others)
            assert.same(uids_of(users), created.members)
            assert.equal(owner.uid, created.owner_uid)
            for i = 2, 5 do
                local ev = assert(cs[i]:wait_push(1069))
                assert.same({ 0, "created", thread, owner.uid, "five" },
                    { ev.error, ev.kind, ev.thread_id, ev.by, ev.name })
                assert.same(uids_of(users), ev.uids)
            end
            -- two senders (one per server) send 3 frames each without waiting
            local senders = { 1, 2 }
            for k = 1, 3 do
                for _, s in ipairs(senders) do
                    assert(cs[s]:send(1065, { thread_id = thread,
                        text_array = texts(("s%d-%d-"):format(s, k), 2) }))
                end
            end
            local ids = {}
            for _, s in ipairs(senders) do
                for k = 1, 3 do
                    local ack = assert(cs[s]:wait_push(1066))
                    assert.equal(0, ack.error)
                    assert.same({ users[s].uid, 0, thread }, { ack.fromuid, ack.touid, ack.thread_id })
                    assert.equal(("s%d-%d-1"):format(s, k), ack.chat_datas[1].content)
                    for _, d in ipairs(ack.chat_datas) do ids[#ids + 1] = d.message_id end
                end
            end
            -- one row per item, recv_id 0
            assert.equal(12, cluster.count("SELECT COUNT(*) AS n FROM chat_message"
                .. " WHERE thread_id = ? AND recv_id = 0", thread))
            for i, c in ipairs(cs) do
                local got = {}
                local expect = (i == 1 or i == 2) and 3 or 6
                for _ = 1, expect do
                    local p = assert(c:wait_push(1067), "push to member " .. i)
                    local from = p.fromuid == users[1].uid and 1 or 2
                    got[from] = got[from] or {}
                    got[from][#got[from] + 1] = p.chat_datas[1].content
                end
                for _, s in ipairs(senders) do
                    if s ~= i then
                        assert.same({ ("s%d-1-1"):format(s), ("s%d-2-1"):format(s),
                            ("s%d-3-1"):format(s) }, got[s])
                    end
                end
                -- exactly once: nothing more, and the senders never get their own
                assert.is_true(c:no_push(1067, 100))
            end
            close_all(cs)
        end)

    it("lets an offline member read from history with unread counts; a new member reads from its joining",
        function()
            local owner, others = people(3)
            local co = cluster.login(chat1.port, owner)
            local thread = create(co, "history", { others[1], others[2] })
            for k = 1, 3 do
                assert.equal(0, assert(co:request(1065, { thread_id = thread,
                    text_array = texts("h" .. k, 1) })).error)
            end
            local c1 = cluster.login(chat2.port, others[1])
            local list = assert(c1:request(1025, {}))
            local item
            for _, t in ipairs(list.threads) do
                if t.thread_id == thread then item = t end
            end
            assert.same({ "group", "history", "member", 3, 0, 0, 0 },
                { item.type, item.name, item.role, item.unread, item.last_read_message_id,
                    item.user1_id, item.user2_id })
            local page = assert(c1:request(1029, { thread_id = thread }))
            assert.equal(0, page.error)
            assert.same({ "h11", "h21", "h31" }, { page.chat_datas[1].msg_content,
                page.chat_datas[2].msg_content, page.chat_datas[3].msg_content })
            assert.equal(0, page.chat_datas[1].receiver)
            -- mark the second one read: one unread left; an older mark does not go back
            local second = page.chat_datas[2].msg_id
            local mr = assert(c1:request(1085, { thread_id = thread, message_id = second }))
            assert.same({ 0, thread, second }, { mr.error, mr.thread_id, mr.last_read_message_id })
            mr = assert(c1:request(1085, { thread_id = thread, message_id = page.chat_datas[1].msg_id }))
            assert.equal(second, mr.last_read_message_id)
            for _, t in ipairs(assert(c1:request(1025, {})).threads) do
                if t.thread_id == thread then assert.same({ 1, second }, { t.unread, t.last_read_message_id }) end
            end
            -- a message of another thread is no message of this one
            assert.same({ error = 1016, field = "message_id" }, assert(c1:request(1085,
                { thread_id = thread, message_id = page.chat_datas[3].msg_id + 1000000 })))
            -- others[3] joins now: sees only what comes after
            local inv = assert(co:request(1063, { thread_id = thread, members = { others[3].uid } }))
            assert.same({ 0, { others[3].uid } }, { inv.error, inv.added })
            local ev = assert(c1:wait_push(1069))
            assert.same({ "joined", { others[3].uid }, owner.uid }, { ev.kind, ev.uids, ev.by })
            assert.equal(0, assert(co:request(1065, { thread_id = thread, text_array = texts("late", 1) })).error)
            local c3 = cluster.login(chat1.port, others[3])
            local p3 = assert(c3:request(1029, { thread_id = thread }))
            assert.equal(1, #p3.chat_datas)
            assert.equal("late1", p3.chat_datas[1].msg_content)
            for _, t in ipairs(assert(c3:request(1025, {})).threads) do
                if t.thread_id == thread then assert.equal(1, t.unread) end
            end
            close_all { co, c1, c3 }
        end)

    it("stops a removed member's pushes and reads; pushes the change to the members", function()
        local owner, others = people(3)
        local cs = spread { owner, others[1], others[2], others[3] }
        local thread = create(cs[1], "rm", others)
        for i = 2, 4 do assert(cs[i]:wait_push(1069)) end
        -- chat2 reads the member list for a message of its own (the removal is on chat1)
        assert.equal(0, assert(cs[4]:request(1065, { thread_id = thread, text_array = texts("before", 1) })).error)
        for i = 1, 3 do assert.equal("before1", assert(cs[i]:wait_push(1067)).chat_datas[1].content) end
        local r = assert(cs[1]:request(1073, { thread_id = thread, uid = others[1].uid }))
        assert.same({ 0, thread, others[1].uid }, { r.error, r.thread_id, r.uid })
        for i = 2, 4 do
            local ev = assert(cs[i]:wait_push(1069), "removal to " .. i)
            assert.same({ "removed", { others[1].uid }, owner.uid }, { ev.kind, ev.uids, ev.by })
        end
        assert.equal(0, assert(cs[4]:request(1065, { thread_id = thread, text_array = texts("after", 1) })).error)
        assert.equal("after1", assert(cs[3]:wait_push(1067)).chat_datas[1].content)
        assert.equal("after1", assert(cs[1]:wait_push(1067)).chat_datas[1].content)
        assert.is_true(cs[2]:no_push(1067, 200))
        local denied = { error = 1015, field = "thread_id" }
        assert.same(denied, assert(cs[2]:request(1029, { thread_id = thread })))
        assert.same(denied, assert(cs[2]:request(1065, { thread_id = thread, text_array = texts("x", 1) })))
        assert.same(denied, assert(cs[2]:request(1081, { thread_id = thread })))
        assert.equal(3, members_row(thread))
        close_all(cs)
    end)

    it("answers a non-member exactly as for a group that does not exist", function()
        local owner, others = people(1)
        local stranger = cluster.user()
        cluster.befriend(stranger, others[1])
        local co = cluster.login(chat1.port, owner)
        local thread = create(co, "secret", others)
        local cs = cluster.login(chat2.port, stranger)
        local nothing = thread + 1000000
        local requests = {
            { 1065, { text_array = texts("n", 1) } },
            { 1029, {} },
            { 1081, {} },
            { 1063, { members = { others[1].uid } } },
            { 1071, {} },
            { 1073, { uid = others[1].uid } },
            { 1075, { uid = others[1].uid, role = "admin" } },
            { 1077, { uid = others[1].uid } },
            { 1079, { name = "mine" } },
            { 1085, { message_id = 1 } },
        }
        for _, rq in ipairs(requests) do
            local real, fake = {}, {}
            for k, v in pairs(rq[2]) do real[k], fake[k] = v, v end
            real.thread_id, fake.thread_id = thread, nothing
            local a = assert(cs:request(rq[1], real))
            local b = assert(cs:request(rq[1], fake))
            assert.same({ error = 1015, field = "thread_id" }, a, "msg " .. rq[1])
            assert.same(a, b, "msg " .. rq[1])
        end
        -- and its group list does not name it
        assert.same({}, assert(cs:request(1083, {})).groups)
        assert.is_true(co:no_push(1069, 50))
        close_all { co, cs }
    end)

    it("refuses at the limits: members, groups per user, name length, non-friends", function()
        local owner, others = people(MAX_MEMBERS)
        local co = cluster.login(chat1.port, owner)
        local five = { unpack(others, 1, MAX_MEMBERS - 1) }
        -- one more than the limit
        assert.same({ error = 1016, field = "members", limit = MAX_MEMBERS },
            assert(co:request(1061, { name = "big", members = uids_of(others) })))
        local thread = create(co, "big", five) -- exactly the limit
        assert.same({ error = 1016, field = "members", limit = MAX_MEMBERS },
            assert(co:request(1063, { thread_id = thread, members = { others[MAX_MEMBERS].uid } })))
        assert.equal(MAX_MEMBERS, members_row(thread))
        -- name: NAME_MAX bytes pass, one more does not; blank names neither
        create(co, ("n"):rep(NAME_MAX), {})
        for _, name in ipairs({ ("n"):rep(NAME_MAX + 1), "  ", "" }) do
            assert.same({ error = 1016, field = "name" }, assert(co:request(1061, { name = name })))
        end
        -- owner is in 2 groups now; a third is the limit, a fourth is refused
        create(co, "third", {})
        assert.same({ error = 1016, field = "members", uid = owner.uid, limit = MAX_PER_USER },
            assert(co:request(1061, { name = "fourth" })))
        -- a stranger is no initial member; members must be distinct others
        local o2, f2 = people(1)
        local c2 = cluster.login(chat2.port, o2)
        local stranger = cluster.user()
        assert.same({ error = 1015, field = "members", uid = stranger.uid },
            assert(c2:request(1061, { name = "x", members = { f2[1].uid, stranger.uid } })))
        assert.same({ error = 1016, field = "members" },
            assert(c2:request(1061, { name = "x", members = { f2[1].uid, f2[1].uid } })))
        assert.same({ error = 1016, field = "members" },
            assert(c2:request(1061, { name = "x", members = { o2.uid } })))
        assert.equal(0, cluster.count("SELECT COUNT(*) AS n FROM group_member WHERE uid = ?", o2.uid))
        close_all { co, c2 }
    end)

    it("keeps member_count exact under concurrent invites and leaves", function()
        -- owner + 2 members; 3 leavers; 6 invitees, each a friend of the owner
        local owner, others = people(2 + 6)
        local initial = { others[1], others[2] }
        local co = cluster.login(chat1.port, owner)
        local thread = create(co, "race", initial)
        for _, m in ipairs(initial) do
            for i = 3, 8 do cluster.befriend(m, others[i]) end
        end
        local c1 = cluster.login(chat2.port, others[1])
        local c2 = cluster.login(chat1.port, others[2])
        -- 6 invites of one user each at once, from three members, then a leave
        local plan = { { co, 3 }, { c1, 4 }, { c2, 5 }, { co, 6 }, { c1, 7 }, { c2, 8 } }
        for _, p in ipairs(plan) do
            assert(p[1]:send(1063, { thread_id = thread, members = { others[p[2]].uid } }))
        end
        assert(c2:send(1071, { thread_id = thread }))
        local ok = 0
        for _, p in ipairs(plan) do
            local r = assert(p[1]:wait_push(1064))
            if r.error == 0 then ok = ok + 1 else
                assert.same({ error = 1016, field = "members", limit = MAX_MEMBERS }, r)
            end
        end
        local left = assert(c2:wait_push(1072))
        assert.equal(0, left.error)
        local rows, g = members_row(thread)
        assert.equal(rows, g.member_count)
        assert.equal(3 + ok - 1, rows)
        assert.truthy(rows <= MAX_MEMBERS)
        assert.truthy(ok >= MAX_MEMBERS - 3) -- at least until full with the leaver still in
        close_all { co, c1, c2 }
    end)

    it("lets the owner and admins manage by rank; an owner who leaves hands over to the first admin",
        function()
            local owner, others = people(4)
            local users = { owner, others[1], others[2], others[3], others[4] }
            local cs = spread(users)
            local thread = create(cs[1], "ranks", others)
            for i = 2, 5 do assert(cs[i]:wait_push(1069)) end
            local function ask(i, id, body)
                body.thread_id = thread
                return assert(cs[i]:request(id, body))
            end
            -- a member may not remove, promote or rename; only the owner promotes
            assert.same({ error = 1015, field = "role" }, ask(2, 1073, { uid = others[2].uid }))
            assert.same({ error = 1015, field = "role" }, ask(2, 1075, { uid = others[2].uid, role = "admin" }))
            assert.same({ error = 1015, field = "role" }, ask(2, 1079, { name = "mine" }))
            assert.same({ error = 1016, field = "role" }, ask(1, 1075, { uid = others[1].uid, role = "owner" }))
            assert.equal(0, ask(1, 1075, { uid = others[1].uid, role = "admin" }).error)
            for i = 2, 5 do
                local ev = assert(cs[i]:wait_push(1069))
                assert.same({ "role", { others[1].uid }, "admin" }, { ev.kind, ev.uids, ev.role })
            end
            assert.equal(0, ask(1, 1075, { uid = others[2].uid, role = "admin" }).error)
            for i = 2, 5 do assert(cs[i]:wait_push(1069)) end
            -- an admin removes members, not admins or the owner
            assert.same({ error = 1015, field = "uid" }, ask(2, 1073, { uid = others[2].uid }))
            assert.same({ error = 1015, field = "uid" }, ask(2, 1073, { uid = owner.uid }))
            assert.same({ error = 1016, field = "uid" }, ask(2, 1073, { uid = cluster.user().uid }))
            assert.equal(0, ask(2, 1073, { uid = others[4].uid }).error)
            assert.equal("removed", assert(cs[5]:wait_push(1069)).kind)
            for _, i in ipairs({ 1, 3, 4 }) do assert(cs[i]:wait_push(1069)) end
            -- invite policy: admins only; then a member's invite is refused
            local u = ask(2, 1079, { invite_policy = "admins", name = "renamed" })
            assert.same({ 0, "renamed", "admins" }, { u.error, u.name, u.invite_policy })
            for _, i in ipairs({ 1, 3, 4 }) do
                local ev = assert(cs[i]:wait_push(1069))
                assert.same({ "updated", "renamed", "admins" }, { ev.kind, ev.name, ev.invite_policy })
            end
            cluster.befriend(others[3], others[4])
            assert.same({ error = 1015, field = "invite_policy" },
                ask(4, 1063, { members = { others[4].uid } }))
            -- the owner leaves: the admin who joined first (a tie: the smaller uid) owns it
            local left = ask(1, 1071, {})
            assert.same({ 0, others[1].uid }, { left.error, left.owner_uid })
            for _, i in ipairs({ 2, 3, 4 }) do
                local ev = assert(cs[i]:wait_push(1069))
                assert.same({ "left", { owner.uid }, others[1].uid }, { ev.kind, ev.uids, ev.owner_uid })
            end
            local list = ask(2, 1081, {})
            assert.same({ { others[1].uid, "owner" }, { others[2].uid, "admin" }, { others[3].uid, "member" } },
                { { list.members[1].uid, list.members[1].role }, { list.members[2].uid, list.members[2].role },
                    { list.members[3].uid, list.members[3].role } })
            -- transfer: the new owner becomes an admin
            local t = ask(2, 1077, { uid = others[3].uid })
            assert.same({ 0, others[3].uid }, { t.error, t.owner_uid })
            assert.equal("owner", assert(cs[4]:wait_push(1069)).kind)
            assert.same({ error = 1015, field = "role" }, ask(2, 1077, { uid = others[2].uid }))
            local mine = assert(cs[2]:request(1083, {}))
            assert.same({ thread, "renamed", others[3].uid, "admin", 3, "admins" },
                { mine.groups[1].thread_id, mine.groups[1].name, mine.groups[1].owner_uid,
                    mine.groups[1].role, mine.groups[1].member_count, mine.groups[1].invite_policy })
            assert.equal(3, members_row(thread))
            close_all(cs)
        end)

    it("counts unread messages up to chat.unread_count_max", function()
        local owner, others = people(1)
        local co = cluster.login(chat1.port, owner)
        local thread = create(co, "many", others)
        local ack = assert(co:request(1065, { thread_id = thread, text_array = texts("u", UNREAD_MAX + 1) }))
        local c1 = cluster.login(chat2.port, others[1])
        local function unread()
            for _, t in ipairs(assert(c1:request(1025, {})).threads) do
                if t.thread_id == thread then return t.unread end
            end
        end
        assert.equal(UNREAD_MAX, unread()) -- one more than the limit: cut
        assert.equal(0, assert(c1:request(1085, { thread_id = thread,
            message_id = ack.chat_datas[1].message_id })).error)
        assert.equal(UNREAD_MAX, unread()) -- exactly the limit
        assert.equal(0, assert(c1:request(1085, { thread_id = thread,
            message_id = ack.chat_datas[2].message_id })).error)
        assert.equal(UNREAD_MAX - 1, unread())
        close_all { co, c1 }
    end)

    it("caches at most chat.group_cache_max member lists per server", function()
        -- a server of its own: its cache holds what this test put there, nothing else
        local chat3 = cluster.start_chat { chat = { group_cache_max = CACHE_MAX } }
        local owner, others = people(1)
        local co = cluster.login(chat3.port, owner)
        local g = {}
        for i = 1, CACHE_MAX + 1 do g[i] = create(co, "cache" .. i, others) end
        local function loads_for(i)
            local before = cluster.metric(chat3, "chathost_chat_group_member_loads_total")
            assert.equal(0, assert(co:request(1065, { thread_id = g[i], text_array = texts("c", 1) })).error)
            return cluster.metric(chat3, "chathost_chat_group_member_loads_total") - before
        end
        -- the third create's list filled the cache past CACHE_MAX: it holds g3 alone
        assert.equal(0, loads_for(3))
        assert.equal(1, loads_for(1))
        assert.same({ 0, 0 }, { loads_for(3), loads_for(1) }) -- CACHE_MAX lists: both kept
        assert.equal(1, loads_for(2)) -- one more: the cache starts again with g2
        assert.equal(1, loads_for(1))
        co:close()
        chat3:stop()
    end)

    it("goes on when a member is on a server without NotifyBatch (an original one)", function()
        local owner, others = people(2)
        local away = "fakeold" .. others[1].uid
        local old = cluster.fake_peer(away, { ["ChatService.NotifyTextChatMsg"] = function(req)
            return { error = 0, fromuid = req.fromuid, touid = req.touid }
        end })
        local co = cluster.login(chat1.port, owner)
        local c2 = cluster.login(chat2.port, others[2])
        local thread = create(co, "mixed", others)
        assert(c2:wait_push(1069))
        assert(host.redis.call("SET", "uip_" .. others[1].uid, away, "EX", 600))
        -- more messages than a sender's share of a peer's queue (chat.push_queue_max + 1):
        -- a group push that never ended there would hold the sender
        for i = 1, 4 do
            assert.equal(0, assert(co:request(1065, { thread_id = thread,
                text_array = texts("m" .. i .. "-", 1) })).error)
            assert.equal("m" .. i .. "-1", assert(c2:wait_push(1067)).chat_datas[1].content)
        end
        assert(util.wait_until(function()
            return cluster.metric(chat1, "chathost_chat_pushes_queue_done_total", 0)
                == cluster.metric(chat1, "chathost_chat_pushes_queued_total", 0)
        end, 5000, "the pushes to the old server to end"))
        old:close()
        close_all { co, c2 }
    end)

    it("pages the member list", function()
        local owner, others = people(MAX_MEMBERS - 1)
        local co = cluster.login(chat1.port, owner)
        local thread = create(co, "paged", others)
        local seen, cursor, more = {}, 0, true
        while more do
            local r = assert(co:request(1081, { thread_id = thread, uid = cursor }))
            assert.equal(0, r.error)
            for _, m in ipairs(r.members) do seen[#seen + 1] = m.uid end
            cursor, more = r.next_uid, r.load_more
        end
        assert.equal(MAX_MEMBERS, #seen)
        co:close()
    end)

    it("sends a read receipt to the other side of a private thread on the other server, once", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat1.port, a)
        local cb = cluster.login(chat2.port, b)
        local ack = assert(ca:request(1017, { touid = b.uid, thread_id = thread,
            text_array = texts("r", 2) }))
        assert(cb:wait_push(1019))
        local one, two = ack.chat_datas[1].message_id, ack.chat_datas[2].message_id
        for _, t in ipairs(assert(cb:request(1025, {})).threads) do
            if t.thread_id == thread then assert.equal(2, t.unread) end
        end
        assert.equal(two, assert(cb:request(1085, { thread_id = thread, message_id = two })).last_read_message_id)
        local rr = assert(ca:wait_push(1087))
        assert.same({ error = 0, thread_id = thread, uid = b.uid, last_read_message_id = two }, rr)
        -- an older mark leaves the cursor and sends nothing
        assert.equal(two, assert(cb:request(1085, { thread_id = thread, message_id = one })).last_read_message_id)
        assert.is_true(ca:no_push(1087, 200))
        for _, t in ipairs(assert(cb:request(1025, {})).threads) do
            if t.thread_id == thread then assert.same({ 0, two }, { t.unread, t.last_read_message_id }) end
        end
        -- the sender's own messages are never unread for it
        for _, t in ipairs(assert(ca:request(1025, {})).threads) do
            if t.thread_id == thread then assert.equal(0, t.unread) end
        end
        close_all { ca, cb }
    end)

    it("carries a group message to another server once, for all its members there", function()
        local owner, others = people(4)
        local co = cluster.login(chat1.port, owner)
        local cs = {}
        for i = 1, 4 do cs[i] = cluster.login(chat2.port, others[i]) end
        local thread = create(co, "once", others)
        for i = 1, 4 do assert(cs[i]:wait_push(1069)) end
        local function carried() -- pushes sent to peers, by the push link or by NotifyBatch
            return cluster.metric(chat1, "chathost_chat_push_batch_items_total", 0)
                + cluster.metric(chat1, "chathost_chat_push_link_items_total", 0)
        end
        local items = carried()
        local ack = assert(co:request(1065, { thread_id = thread, text_array = texts("o", 1) }))
        for i = 1, 4 do assert.equal("o1", assert(cs[i]:wait_push(1067)).chat_datas[1].content) end
        assert.equal(1, carried() - items)
        -- a resend (same unique_id) answers the first message and stores nothing
        local again = assert(co:request(1065, { thread_id = thread, text_array = texts("o", 1) }))
        assert.equal(ack.chat_datas[1].message_id, again.chat_datas[1].message_id)
        assert.equal(1, cluster.count("SELECT COUNT(*) AS n FROM chat_message WHERE thread_id = ?", thread))
        close_all(cs)
        co:close()
    end)
end)

describe("chat groups after a reload", function()
    local cl, dir

    setup(function()
        cl = cluster.start { chats = 1, copy_scripts = true, edit = function(d) dir = d end }
    end)

    teardown(function() cl:stop() end)

    it("applies an edited group rule at the next request", function()
        local owner, f1, f2 = cluster.user(), cluster.user(), cluster.user()
        cluster.befriend(owner, f1)
        cluster.befriend(owner, f2)
        local chat = cl.chats[1]
        local c = cluster.login(chat.port, owner)
        local members = { f1.uid, f2.uid }
        local first = assert(c:request(1061, { name = "before", members = members }))
        assert.equal(0, first.error)
        local generation = cluster.metric(chat, "chathost_script_generation")
        util.edit_file(dir .. "/chat/groups.lua", "max_members = settings.group_max_members,",
            "max_members = 2,")
        assert(chat.proc:kill("HUP"))
        assert(util.wait_until(function()
            return cluster.metric(chat, "chathost_script_generation") > generation
        end, 5000, "the reload"))
        assert.same({ error = 1016, field = "members", limit = 2 },
            assert(c:request(1061, { name = "after", members = members })))
        c:close()
    end)
end)

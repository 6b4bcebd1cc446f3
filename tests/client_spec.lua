-- The terminal client (scripts/client, issue 6) against the real system: an SMTP sink,
-- verify, status, gate and two chat servers. Through the Lua API two people register
-- (codes read from the sink), log in, find each other, become friends, chat both ways and
-- read the history, make a group and chat there; a second login of one account signs the
-- first out. Then the command
-- line's --send and --listen, and what the client does when a chat server goes away.
-- (tests/client_checks_spec.lua has the pieces on their own; client_tty_spec.lua the UI.)
local host = require "host"
local system = require "helpers.client_system"
local roles = require "helpers.roles"
local util = require "helpers.util"

-- The next event of kind (events of other kinds before it are skipped and returned too).
local function await(c, kind, timeout_ms)
    local deadline = host.timer.monotonic() + (timeout_ms or 5000)
    local skipped = {}
    while true do
        local left = deadline - host.timer.monotonic()
        local ev = left > 0 and c:next_event(left)
        if not ev then
            error(("no %s event (saw: %s)"):format(kind, host.json.encode(skipped)), 2)
        end
        if ev.kind == kind then return ev, skipped end
        skipped[#skipped + 1] = ev
    end
end

local PAGE_SIZE = 3 -- the chat servers' page size: a history of a few messages spans pages

describe("terminal client", function()
    local sys, loader, api
    local alice, bob
    local open = {} -- clients of the current test, closed after it

    -- A client object (opts: api.new's), logged in as acc when acc is given.
    local function client(acc, opts)
        opts = opts or {}
        opts.gate = sys.gate_url
        local c = api.new(opts)
        open[#open + 1] = c
        if acc then assert(c:login(acc.email, acc.password)) end
        return c
    end

    setup(function()
        sys = system.start { chat = { page_size = PAGE_SIZE } }
        local handlers
        loader, handlers = system.load_client()
        api = handlers.api
        alice, bob = system.account("alice"), system.account("bob")
    end)

    teardown(function()
        loader:close()
        sys:stop()
    end)

    before_each(function() system.clear_limits() end)

    after_each(function()
        for _, c in ipairs(open) do c:close() end
        open = {}
    end)

    describe("API", function()
        it("registers two accounts with codes from the mail", function()
            local a, b = client(), client()
            local reg = sys:register(a, alice)
            assert.equal(alice.user, reg.user)
            assert.equal(alice.email, reg.email)
            assert.truthy(reg.uid >= 1001)
            sys:register(b, bob)
            assert.are_not.equal(alice.uid, bob.uid)
            -- the same name again: the gate's 1005 as a sentence
            assert(a:get_code("again." .. alice.email))
            local code = assert(sys:code_for("again." .. alice.email))
            local r, err, ecode = a:register { user = alice.user, email = "again." .. alice.email,
                password = "abc123", code = code }
            assert.is_nil(r)
            assert.equal(1005, ecode)
            assert.equal("That user name or e-mail address is already registered", err)
        end)

        it("logs both in, each with its friend list and applications", function()
            local a, b = client(), client()
            local me = assert(a:login(alice.email, alice.password))
            assert.equal(alice.uid, me.uid)
            assert.equal(alice.user, me.name)
            assert.equal("online", a.state)
            assert.same({}, a:friends())
            assert.same({}, a:requests())
            assert(b:login(bob.email, bob.password))
            local r, err, code = client():login(bob.email, "wrong1")
            assert.is_nil(r)
            assert.equal(1009, code)
            assert.equal("Wrong e-mail or password", err)
        end)

        it("finds a user by name and by uid", function()
            local a = client(alice)
            local found = assert(a:search(bob.user))
            assert.equal(bob.uid, found.uid)
            assert.equal(bob.user, found.name)
            assert.is_nil(found.email)
            assert.equal(bob.uid, assert(a:search(tostring(bob.uid))).uid)
            local none, err, code = a:search("nobody" .. host.crypto.random_hex(4))
            assert.is_nil(none)
            assert.equal(1011, code)
            assert.equal("No such user", err)
        end)

        it("sends a friend request that the other side sees arrive and accepts", function()
            local a, b = client(alice), client(bob)
            assert.is_true(a:add(bob.uid, "hi bob, it is alice"))
            local ev = await(b, "apply")
            assert.equal(alice.uid, ev.uid)
            assert.equal(alice.user, ev.name)
            assert.equal("hi bob, it is alice", ev.greeting)
            assert.same({ alice.uid }, (function()
                local uids = {}
                for _, r in ipairs(b:requests()) do uids[#uids + 1] = r.uid end
                return uids
            end)())

            local friend = assert(b:accept(alice.uid, "Alice"))
            assert.equal(alice.uid, friend.uid)
            assert.equal(alice.user, friend.name)
            assert.truthy(friend.thread_id)
            assert.same({}, b:requests())
            assert.equal(alice.uid, b:friends()[1].uid)

            local acc = await(a, "accepted")
            assert.equal(bob.uid, acc.uid)
            assert.equal(bob.user, acc.name)
            assert.equal(friend.thread_id, acc.thread_id)
            assert.equal(bob.uid, a:friends()[1].uid)
            assert.truthy(a:is_friend(bob.uid))
        end)

        it("chats both ways: each message acknowledged, then pushed to the other", function()
            local a, b = client(alice), client(bob)
            local sent = assert(a:send(bob.uid, "hello bob"))
            assert.equal("hello bob", sent.text)
            assert.truthy(sent.message_id)
            assert.matches("^{%x+%-%x+%-4%x+%-[89ab]%x+%-%x+}$", sent.unique_id)
            local msg = await(b, "message")
            assert.equal(alice.uid, msg.from)
            assert.equal(alice.user, msg.name)
            assert.equal("hello bob", msg.text)
            assert.equal(sent.message_id, msg.message_id)
            assert.truthy(msg.time)

            local back = assert(b:send(alice.uid, "hi alice, héllo ✓"))
            local got = await(a, "message")
            assert.equal(bob.uid, got.from)
            assert.equal(bob.user, got.name)
            assert.equal("hi alice, héllo ✓", got.text)
            assert.equal(back.message_id, got.message_id)
        end)

        it("shows the history of a chat, oldest first, the last N", function()
            local a, b = client(alice), client(bob)
            assert(a:send(bob.uid, "third"))
            await(b, "message")
            local all = assert(b:history(alice.uid, 50))
            local texts = {}
            for _, m in ipairs(all) do texts[#texts + 1] = m.text end
            -- the acceptance's greeting first, then the three messages
            assert.equal("hi bob, it is alice", texts[1])
            assert.same({ "hello bob", "hi alice, héllo ✓", "third" },
                { texts[#texts - 2], texts[#texts - 1], texts[#texts] })
            local last2 = assert(a:history(bob.uid, 2))
            assert.equal(2, #last2)
            assert.equal("hi alice, héllo ✓", last2[1].text)
            assert.equal(bob.uid, last2[1].from)
            assert.is_false(last2[1].mine)
            assert.equal("third", last2[2].text)
            assert.is_true(last2[2].mine)
        end)

        it("refuses to chat with someone who is not a friend", function()
            local carol = system.account("carol")
            sys:register(client(), carol)
            local a = client(alice)
            local r, err, code = a:send(carol.uid, "hello?")
            assert.is_nil(r)
            assert.equal(1015, code)
            assert.matches("not friends", err)
        end)

        it("a second login of an account signs the first out, with no login again", function()
            local a, b = client(alice), client(bob)
            local a2 = client(alice)
            local ev = await(a, "kicked")
            assert.equal("You were signed out: your account logged in somewhere else.", ev.message)
            assert.equal("kicked", a.state)
            local r, err, code = a:send(bob.uid, "still there?")
            assert.is_nil(r)
            assert.equal("kicked", code)
            assert.equal(ev.message, err)
            -- the new session works, and no reconnection happens on the old one
            assert(a2:send(bob.uid, "from the new login"))
            assert.equal("from the new login", await(b, "message").text)
            assert.is_nil(a:next_event(300))
            assert.equal("kicked", a.state)
        end)

        it("resets a password with a mailed code; the new one logs in", function()
            local erin = system.account("erin")
            local c = client()
            sys:register(c, erin)
            host.redis.call("DEL", "rate:mail:" .. erin.email) -- one mail per address per second
            assert(c:get_code(erin.email, "reset"))
            local code = assert(sys:code_for(erin.email))
            local r, err, ecode = c:reset { user = "nobody" .. erin.uid, email = erin.email,
                password = "N3w.pass", code = code }
            assert.is_nil(r)
            assert.same({ "That user name and e-mail address do not belong to the same account",
                1007 }, { err, ecode })
            assert(c:reset { user = erin.user, email = erin.email, password = "N3w.pass",
                code = code })
            assert.equal(1009, select(3, client():login(erin.email, erin.password)))
            assert.equal(erin.uid, assert(client():login(erin.email, "N3w.pass")).uid)
        end)

        it("shows the friend requests that arrived while offline at the next login", function()
            local dave = system.account("dave")
            local d = client()
            sys:register(d, dave)
            assert(d:login(dave.email, dave.password))
            assert(d:add(alice.uid)) -- alice is not logged in
            local a = client(alice)
            local pending = a:requests()
            assert.equal(1, #pending)
            assert.equal(dave.uid, pending[1].uid)
            assert.equal(dave.user, pending[1].name)
            assert.equal("Hello, I am " .. dave.user, pending[1].greeting)
            assert.same({ bob.uid }, { a:friends()[1].uid })
        end)

        it("makes a group, chats in it, counts what is unread at the next login, marks it read and leaves",
            function()
                local a, b = client(alice), client(bob)
                local g = assert(a:create_group("club", { bob.uid }))
                assert.same({ alice.uid, bob.uid }, g.members)
                local ev = await(b, "group_event")
                assert.same({ "created", g.thread_id, "club", alice.uid },
                    { ev.change, ev.thread_id, ev.group, ev.by })
                local members = assert(b:members(g.thread_id))
                assert.same({ { alice.uid, "owner" }, { bob.uid, "member" } },
                    { { members[1].uid, members[1].role }, { members[2].uid, members[2].role } })
                assert.equal("hi club", assert(a:send_group(g.thread_id, "hi club")).text)
                local msg = await(b, "group_message")
                assert.same({ "hi club", alice.uid, "club", g.thread_id },
                    { msg.text, msg.from, msg.group, msg.thread_id })
                b:close()
                local later = assert(a:send_group(g.thread_id, "while you were away"))
                local b2 = client(bob)
                local function unread_in_group()
                    for _, t in ipairs(assert(b2:unread_threads())) do
                        if t.thread_id == g.thread_id then return t.unread end
                    end
                    return 0
                end
                assert.equal(2, unread_in_group())
                assert.equal(later.message_id, assert(b2:mark_read(g.thread_id, later.message_id)))
                assert.equal(0, unread_in_group())
                local mine = assert(b2:my_groups())
                assert.same({ g.thread_id, "club", "member" }, { mine[1].thread_id, mine[1].name, mine[1].role })
                assert(b2:leave(g.thread_id))
                local left = await(a, "group_event")
                assert.same({ "left", { bob.uid } }, { left.change, left.uids })
                assert.same({}, assert(b2:my_groups()))
            end)
    end)

    describe("command line", function()
        local config

        setup(function()
            config = assert(host.fs.mkdtemp("clientcli")) .. "/config.lua"
            assert(host.fs.write(config, "return " .. roles.serialize {
                scripts = { dir = host.root .. "/scripts" },
                client = { gate_url = sys.gate_url, retry_min_ms = 10, retry_max_ms = 50 },
            } .. "\n"))
        end)

        teardown(function() host.fs.rmtree((config:gsub("/config%.lua$", ""))) end)

        local function run(...)
            return util.chathost({ "client", "-c", config, ... }, { timeout_ms = 8000 })
        end

        it("--send logs in, sends one message, prints the acknowledgement and exits 0", function()
            local b = client(bob)
            local r = run("--email", alice.email, "--password", alice.password,
                "--send", tostring(bob.uid), "sent by a script")
            assert.equal(0, r.code, r.stderr)
            local ack = host.json.decode(r.stdout)
            assert.equal("sent", ack.kind)
            assert.equal(bob.uid, ack.to)
            assert.equal("sent by a script", ack.text)
            assert.truthy(ack.message_id)
            local msg = await(b, "message")
            assert.equal("sent by a script", msg.text)
            assert.equal(ack.message_id, msg.message_id)
        end)

        it("--send exits non-zero with the error as a sentence", function()
            local r = run("--email", alice.email, "--password", "wrong1", "--send",
                tostring(bob.uid), "x")
            assert.equal(1, r.code)
            assert.equal("", r.stdout)
            assert.equal("chathost client: Wrong e-mail or password\n", r.stderr)
            r = run("--email", alice.email, "--password", alice.password, "--send", "12x", "x")
            assert.equal(1, r.code)
            assert.equal("chathost client: 12x is not a user id\n", r.stderr)
            r = run("--send", "1", "x")
            assert.equal(2, r.code)
            assert.matches("needs %-%-email and %-%-password", r.stderr)
        end)

        it("--help prints the usage, saying --send signs the same user's session out", function()
            for _, flag in ipairs { "--help", "-h" } do
                local r = run(flag)
                assert.equal(0, r.code, r.stderr)
                assert.matches("^usage: chathost client ", r.stdout)
                assert.truthy(r.stdout:find("interactive client signed in as the same user is\n"
                    .. "signed out", 1, true), r.stdout)
            end
        end)

        it("refuses a piped line longer than client.line_max_bytes, and reads one that long",
            function()
                local dir = assert(host.fs.mkdtemp("clientline"))
                local small = dir .. "/config.lua"
                assert(host.fs.write(small, "return " .. roles.serialize {
                    scripts = { dir = host.root .. "/scripts" },
                    client = { gate_url = sys.gate_url, line_max_bytes = 16 },
                } .. "\n"))
                local input = ("x"):rep(17) .. "\n" .. ("y"):rep(16) .. "\n4\n"
                local r = assert(host.proc.run({ "sh", "-c", 'printf "%s" "$1" | "$2" client -c "$3"',
                    "sh", input, util.bin(), small }, { timeout_ms = 8000 }))
                host.fs.rmtree(dir)
                assert.equal(0, r.code, r.stderr)
                assert.truthy(r.stdout:find("That line is 17 bytes, longer than the 16 the client "
                    .. "reads; it was not used.\n", 1, true), r.stdout)
                -- 16 bytes are read whole: the menu answers them as a wrong choice
                local _, wrong = r.stdout:gsub("Type 1, 2, 3 or 4%.", "")
                assert.equal(1, wrong, r.stdout)
                assert.truthy(r.stdout:find("Bye.", 1, true), r.stdout)
            end)

        it("--listen prints every event as a JSON line until interrupted", function()
            local p = assert(host.proc.spawn({ util.bin(), "client", "-c", config,
                "--email", bob.email, "--password", bob.password, "--listen" },
                { stdout = "capture", stderr = "capture" }))
            local function lines()
                local out = p:output()
                local list = {}
                for line in out:gmatch("[^\n]+") do list[#list + 1] = host.json.decode(line) end
                return list
            end
            assert(util.wait_until(function() return #lines() >= 1 end, 5000, "listening"))
            assert.equal("listening", lines()[1].kind)
            assert.equal(bob.uid, lines()[1].uid)
            local a = client(alice)
            assert(a:send(bob.uid, "to the listener"))
            assert(util.wait_until(function() return #lines() >= 2 end, 5000, "the message"))
            local msg = lines()[2]
            assert.equal("message", msg.kind)
            assert.equal(alice.uid, msg.from)
            assert.equal(alice.user, msg.name)
            assert.equal("to the listener", msg.text)
            p:kill("INT")
            assert.equal(0, p:wait(5000))
        end)
    end)

    describe("when a chat server goes away", function()
        -- The index in sys.chats of the chat server a client is connected to.
        local function server_of(c)
            for i, chat in ipairs(sys.chats) do
                if chat and c.server == "127.0.0.1:" .. chat.port then return i end
            end
            return nil
        end

        it("logs in again through the gate and goes on chatting", function()
            local a, b = client(alice), client(bob)
            local i = assert(server_of(a))
            local bob_moves = assert(server_of(b)) == i -- read before kill_chat forgets server i
            local before = a.server
            sys:kill_chat(i)
            local lost = await(a, "disconnected")
            assert.equal("The connection to the chat server was lost", lost.message)
            local back = await(a, "reconnected", 9000)
            assert.are_not.equal(before, back.server)
            assert.equal("online", a.state)
            if bob_moves or b.state ~= "online" then await(b, "reconnected", 9000) end
            assert(a:send(bob.uid, "after the move"))
            assert.equal("after the move", await(b, "message").text)
        end)

        it("gives up after a bounded number of logins and says so", function()
            -- the killed server's liveness key expires (alive_ttl_s) before status stops
            -- choosing it
            assert(util.wait_until(function()
                for i = 1, 2 do
                    local key = "chatserver_chat" .. i
                    if not sys.chats[i] and host.redis.call("EXISTS", key) == 1 then
                        return false
                    end
                end
                return true
            end, 8000, "the killed chat server's liveness key to expire", 100))
            local a = client(alice, { reconnect_attempts = 2, retry_attempts = 2,
                retry_min_ms = 10, retry_max_ms = 20 })
            sys:stop_chat(assert(server_of(a)))
            await(a, "disconnected")
            local ev = await(a, "offline", 8000)
            assert.equal("offline", a.state)
            assert.matches("^The connection to the chat server was lost: ", ev.message)
            local r, err, code = a:search(bob.user)
            assert.is_nil(r)
            assert.same({ "You are not logged in", "offline" }, { err, code })
        end)
    end)
end)

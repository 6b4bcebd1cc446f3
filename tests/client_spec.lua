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
local http = require "helpers.http"
local tls = require "helpers.tls"

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
    local sys, loader, api, format
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
        format = handlers.format
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

    describe("images", function()
        -- A real PNG of 270448 bytes (9 chunks: the window of 5 refills).
        local PNG = host.root .. "/tests/fixtures/images/noise.png"
        local dir

        setup(function() dir = assert(host.fs.mkdtemp("climages")) end)
        teardown(function() host.fs.rmtree(dir) end)

        -- alice and bob are friends (the API tests above made them so)
        it("sends a PNG that bob (on the other chat server if there) sees and saves byte for byte",
            function()
                local a = client(alice)
                local b = client(bob, { images_dir = dir .. "/bob" })
                assert.is_nil(a.res_error)
                local progress = {}
                local sent = assert(a:send_image(bob.uid, PNG, function(done, total)
                    progress[#progress + 1] = { done, total }
                end))
                local bytes = assert(host.fs.read(PNG))
                assert.equal(#bytes, sent.size)
                assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+%.png$", sent.name)
                assert.equal(9, #progress)
                assert.same({ #bytes, #bytes }, progress[#progress])
                local ev = await(b, "image")
                assert.same({ alice.uid, alice.user, sent.message_id, sent.name, #bytes },
                    { ev.from, ev.name, ev.message_id, ev.img_name, ev.size })
                assert.equal(("[image from %s: %s, 265 KB] /save %d [PATH]"):format(alice.user,
                    sent.name, sent.message_id), format.event(ev):match("^%[[%d:]+%] (.*)$"))
                local saved = assert(b:save_image(sent.message_id))
                assert.equal(dir .. "/bob/" .. sent.name, saved.path)
                assert.equal(#bytes, saved.size)
                assert.equal(bytes, host.fs.read(saved.path))
                -- the history shows the same line (the size as the push told it) ...
                local seen = assert(b:history(alice.uid, 1))[1]
                assert.equal(("[image from %s: %s, 265 KB] /save %d [PATH]"):format(alice.user,
                    sent.name, sent.message_id), format.history(seen):match("^%[[^%]]+%] (.*)$"))
                -- ... and /save works from it with no push seen (1045 for the size)
                local c = client(bob)
                local list = assert(c:history(alice.uid, 1))
                assert.is_true(list[1].image)
                assert.equal(("[image from %s: %s] /save %d [PATH]"):format(alice.user, sent.name,
                    sent.message_id), format.history(list[1]):match("^%[[^%]]+%] (.*)$"))
                local again = assert(c:save_image(sent.message_id, dir .. "/again.png"))
                assert.equal(bytes, host.fs.read(again.path))
            end)

        it("resumes with 1043 from the last confirmed chunk when the resource connection drops",
            function()
                local a, b = client(alice), client(bob)
                local dropped = false
                local sent = assert(a:send_image(bob.uid, PNG, function(done)
                    if not dropped and done >= 2 * 32768 then
                        dropped = true
                        a.res.sock:close() -- the connection is gone mid-window
                    end
                end))
                assert.is_true(dropped)
                assert.equal(1, a.res.resumes)
                local ev = await(b, "image")
                assert.equal(sent.message_id, ev.message_id)
                local path = dir .. "/resumed.png"
                assert(b:save_image(sent.message_id, path))
                assert.equal(assert(host.fs.read(PNG)), host.fs.read(path))
            end)

        it("refuses a missing file, a file that is not an image and one too big, with sentences",
            function()
                local a = client(alice, { image_max_bytes = 270447 })
                local function refused(path)
                    local r, err, code = a:send_image(bob.uid, path)
                    assert.is_nil(r)
                    assert.equal("invalid", code)
                    return err
                end
                assert.equal("No such file: " .. dir .. "/none.png", refused(dir .. "/none.png"))
                assert.equal(dir .. " is not a file", refused(dir))
                local text = dir .. "/notes.png"
                assert(host.fs.write(text, "just some text, named .png"))
                assert.equal(text .. " is not an image the server takes "
                    .. "(png, jpeg, gif, webp, bmp)", refused(text))
                assert.equal(PNG .. " is 270448 bytes; an image may be at most 270447 bytes",
                    refused(PNG))
                -- at the limit it goes
                local ok = client(alice, { image_max_bytes = 270448 })
                assert(ok:send_image(bob.uid, PNG))
            end)

        it("never overwrites a file on /save, and refuses an image of someone else's chat",
            function()
                local a, b = client(alice), client(bob)
                local sent = assert(a:send_image(bob.uid, PNG))
                local path = dir .. "/taken.png"
                assert(host.fs.write(path, "mine"))
                local r, err, code = b:save_image(sent.message_id, path)
                assert.is_nil(r)
                assert.equal("exists", code)
                assert.equal(path .. " exists already; it was not overwritten (/save "
                    .. sent.message_id .. " OTHER_PATH)", err)
                assert.equal("mine", host.fs.read(path))
                -- a folder as PATH: the image's own name in it
                local saved = assert(b:save_image(sent.message_id, dir))
                assert.equal(dir .. "/" .. sent.name, saved.path)
                -- a stranger (a third account) is told it is not their chat
                local carol = system.account("carol")
                sys:register(client(), carol)
                local cc = client(carol)
                r, err, code = cc:save_image(sent.message_id, dir .. "/stolen.png")
                assert.is_nil(r)
                assert.equal(1106, code)
                assert.equal("That image is not in a chat of yours", err)
                assert.is_nil(host.file.stat(dir .. "/stolen.png"))
            end)

        it("gives a signed URL that a plain HTTP GET fetches", function()
            local a = client(alice)
            local sent = assert(a:send_image(bob.uid, PNG))
            local link = assert(client(bob):image_url(sent.message_id))
            local port, path = link.url:match("^http://127%.0%.0%.1:(%d+)(/files/.*)$")
            assert.equal(sys.resource.http_port, tonumber(port))
            local res = assert(http.get(tonumber(port), path))
            assert.equal(200, res.status)
            assert.equal("image/png", res.headers["content-type"])
            assert.equal(assert(host.fs.read(PNG)), res.body)
        end)

        -- last of the images tests: the resource role stays stopped
        it("says images are unavailable when the resource server cannot be reached, and chats on",
            function()
                local port = sys.resource.port
                sys.resource:stop()
                sys.resource = nil
                local a = client(alice)
                local unavailable = ("Images are unavailable: Cannot reach the resource server "
                    .. "at 127.0.0.1:%d (connection refused)"):format(port)
                assert.equal(unavailable, a.res_error)
                assert.equal("online", a.state)
                local r, err, code = a:send_image(bob.uid, PNG)
                assert.is_nil(r)
                assert.same({ unavailable, "images" }, { err, code })
                assert(a:send(bob.uid, "text still goes"))
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

    describe("through an https gate", function()
        local dir, ca, relay, gate, config

        setup(function()
            dir = assert(host.fs.mkdtemp("client_https"))
            ca = tls.ca(dir, "ca")
            -- what a TLS-terminating proxy in front of the gate does
            relay = tls.relay(tls.cert(dir, ca, "gate"), sys.gate.port)
            gate = "https://127.0.0.1:" .. relay.port
            config = dir .. "/config.lua"
            assert(host.fs.write(config, "return " .. roles.serialize {
                scripts = { dir = host.root .. "/scripts" },
                client = { gate_url = gate, retry_min_ms = 10, retry_max_ms = 50 },
            } .. "\n"))
        end)

        teardown(function()
            relay.stop()
            host.fs.rmtree(dir)
        end)

        it("logs in over https and chats on the chat server the gate named", function()
            local b = client(bob)
            local a = api.new { gate = gate, ca_file = ca.pem }
            open[#open + 1] = a
            local me = assert(a:login(alice.email, alice.password))
            assert.equal(alice.uid, me.uid)
            assert(a:send(bob.uid, "sent through https"))
            assert.equal("sent through https", await(b, "message").text)
        end)

        it("--send takes the gate's CA from --ca-file or client.ca_file, and says why without",
            function()
            local r = util.chathost({ "client", "-c", config, "--ca-file", ca.pem, "--email",
                alice.email, "--password", alice.password, "--send", tostring(bob.uid), "cli" },
                { timeout_ms = 8000 })
            assert.equal(0, r.code, r.stderr)
            assert.equal("sent", host.json.decode(r.stdout).kind)
            local with_ca = dir .. "/with_ca.lua"
            assert(host.fs.write(with_ca, "return " .. roles.serialize {
                scripts = { dir = host.root .. "/scripts" },
                client = { gate_url = gate, ca_file = ca.pem },
            } .. "\n"))
            r = util.chathost({ "client", "-c", with_ca, "--email", alice.email, "--password",
                alice.password, "--send", tostring(bob.uid), "config" }, { timeout_ms = 8000 })
            assert.equal(0, r.code, r.stderr)
            r = util.chathost({ "client", "-c", config, "--email", alice.email, "--password",
                alice.password, "--send", tostring(bob.uid), "cli" }, { timeout_ms = 8000 })
            assert.equal(1, r.code)
            assert.matches("^chathost client: Cannot reach the gate at " .. gate:gsub("%p", "%%%0")
                .. " %(tls: certificate problem: ", r.stderr)
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

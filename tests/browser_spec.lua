-- The web client (web/, served by the gate) in headless Chromium against the whole system
-- (helpers.client_system with WebSocket listeners on both chat servers): two pages, one
-- desktop-sized and one phone-sized, register with the mailed codes, befriend each other
-- and chat across the two chat servers with unread counts and in a group; the field checks
-- and sentences; a reset; a kick by a login elsewhere; a reconnect after a chat server is
-- killed; a chat with a user of the terminal client (TCP) on the same system.
-- Screenshots of the main screens land in build/test-artifacts/. One browser and one system
-- for the whole file; the tests run in order and build on each other. Skipped, saying why,
-- where Chromium cannot run.
local host = require "host"
local browser = require "helpers.browser"
local system = require "helpers.client_system"
local util = require "helpers.util"

local ok, why = browser.probe()
if not ok then
    io.stderr:write(spec_file, ": SKIPPED: headless Chromium unavailable: ", why, "\n")
    pending("the web client in a browser: skipped, headless Chromium unavailable: " .. why)
    return
end

describe("the web client in a browser", function()
    -- a system and a browser start once; a chat server is killed in the last test
    timeout(60000)
    local sys, b, alice, bob, pa, pb

    setup(function()
        sys = system.start {
            -- pages of 3: the client's history and thread loads take several pages
            chat = function(s) return { ws_origins = { s.gate_url }, page_size = 3 } end,
            instance = function() return { ws_port = require("helpers.roles").free_port() } end,
            -- a request without its reply fails soon (the resend test stops a chat server)
            web_client = { request_timeout_ms = 1500 },
        }
        system.clear_limits()
        b = browser.start()
        alice, bob = system.account("wa"), system.account("wb")
        alice.password, bob.password = "Alice.pw1", "Bob.pw22"
        pa = b:page("alice", { width = 1100, height = 760 })
        pb = b:page("bob", { width = 390, height = 760, mobile = true })
        pa:go(sys.gate_url .. "/")
        pb:go(sys.gate_url .. "/")
    end)

    teardown(function()
        if b then b:stop() end
        if sys then sys:stop() end
    end)

    -- The chat server (index in sys.chats) a logged-in user's session is on.
    local function server_of(acc)
        local name = host.redis.call("GET", "uip_" .. acc.uid)
        return name and tonumber(name:match("^chat(%d)$"))
    end

    local function register(p, acc)
        p:go(sys.gate_url .. "/#register")
        p:wait("!document.getElementById('screen-register').hidden", "the register screen")
        p:fill("register-user", acc.user)
        p:fill("register-email", acc.email)
        p:click("register-getcode")
        p:wait_text("register-info", "A code was mailed to " .. acc.email)
        p:fill("register-code", assert(sys:code_for(acc.email)))
        p:fill("register-password", acc.password)
        p:fill("register-confirm", acc.password)
        p:click("register-submit")
        p:wait_text("login-info", "Account " .. acc.user .. " created; log in")
    end

    local function login(p, acc)
        p:fill("login-email", acc.email)
        p:fill("login-password", acc.password)
        p:click("login-submit")
        p:wait("document.body.dataset.state === 'online'", acc.user .. " online")
        acc.uid = tonumber(p:eval("document.body.dataset.uid"))
    end

    it("checks the fields as the desktop client does before sending anything", function()
        pa:go(sys.gate_url .. "/#register")
        pa:wait("!document.getElementById('screen-register').hidden", "the register screen")
        pa:fill("register-user", "no spaces")
        pa:click("register-submit")
        assert.equal("User name may contain only letters and digits", pa:wait_text("register-error", "User name"))
        pa:fill("register-user", "okname")
        pa:fill("register-email", "not-an-address")
        pa:click("register-getcode")
        assert.equal("E-mail address is not valid", pa:wait_text("register-error", "E-mail"))
        pa:fill("register-email", "fine@example.com")
        pa:fill("register-password", "short")
        pa:click("register-submit")
        pa:wait_text("register-error", "Password must be 6 to 15 characters")
        pa:fill("register-password", "Long.enough1")
        pa:fill("register-confirm", "Long.enough2")
        pa:click("register-submit")
        pa:wait_text("register-error", "Passwords do not match")
        -- nothing went to the gate: no mail was asked for
        assert.equal(0, #sys.sink:messages())
        pa:shot("web-register-checks.png")
    end)

    it("says the server's errors in sentences", function()
        pa:go(sys.gate_url .. "/#login")
        pa:fill("login-email", "nobody@example.com")
        pa:fill("login-password", "Nobody.pw1")
        pa:click("login-submit")
        assert.equal("Wrong e-mail or password", pa:wait_text("login-error", "Wrong"))
        pa:shot("web-login-error.png")
    end)

    it("registers two users with the mailed codes", function()
        register(pa, alice)
        pa:shot("web-login.png")
        register(pb, bob)
    end)

    it("resets a password with a mailed code", function()
        pb:go(sys.gate_url .. "/#reset")
        pb:wait("!document.getElementById('screen-reset').hidden", "the reset screen")
        pb:fill("reset-user", bob.user)
        pb:fill("reset-email", bob.email)
        -- the verify role mails one address once a second (resend_interval_s): until then
        -- the button's answer is 1017's sentence
        assert(util.wait_until(function()
            pb:click("reset-getcode")
            local said = pb:wait("document.getElementById('reset-info').textContent || "
                .. "document.getElementById('reset-error').textContent || null", "an answer to the code request")
            if said:find("A code was mailed to " .. bob.email, 1, true) then return true end
            assert.truthy(said:find("Too many attempts; try again in", 1, true), said)
        end, 5000, "a second code", 300))
        pb:fill("reset-code", assert(sys:code_for(bob.email)))
        bob.password = "Bob.new33"
        pb:fill("reset-password", bob.password)
        pb:click("reset-submit")
        pb:wait_text("login-info", "Password changed; log in")
    end)

    it("logs both in on different chat servers over WebSocket", function()
        login(pa, alice)
        local first = assert(server_of(alice))
        -- the status role sends the next login to the least loaded server once the first
        -- server has reported its session
        assert(util.wait_until(function()
            return tonumber(host.redis.call("HGET", "logincount", "chat" .. first)) == 1
        end, 5000, "chat" .. first .. " to report its session", 50))
        login(pb, bob)
        assert.are_not.equal(first, server_of(bob))
        assert.equal(alice.user, pa:text("me-name"))
    end)

    it("finds a user, sends a friend request and accepts it", function()
        pa:fill("search-text", bob.user)
        pa:click("search-submit")
        pa:wait_text("search-uid", "#" .. bob.uid)
        pa:fill("search-greeting", "hi bob, it is alice")
        pa:click("search-add")
        pa:wait_text("search-info", "Friend request sent")
        -- bob's request list gets the 1011 push across servers
        pb:wait(("document.querySelector('#requests li[data-uid=\"%d\"]') !== null"):format(alice.uid),
            "alice's request")
        assert.truthy(pb:text("requests"):find("hi bob, it is alice", 1, true))
        pb:shot("web-request-phone.png")
        pb:eval("document.querySelector('#requests li button.accept').click()")
        pb:wait(("document.querySelector('#friends li[data-uid=\"%d\"]') !== null"):format(alice.uid),
            "alice among bob's friends")
        -- alice gets the 1015 push: bob is her friend, with the greetings unread
        pa:wait(("document.querySelector('#friends li[data-uid=\"%d\"] .badge')?.textContent === '1'")
            :format(bob.uid), "bob with one unread greeting")
    end)

    it("chats across the two servers, with unread counts and history", function()
        pa:eval(("document.querySelector('#friends li[data-uid=\"%d\"]').click()"):format(bob.uid))
        pa:wait_text("messages", "We are friends now!")
        pa:wait(("!document.querySelector('#friends li[data-uid=\"%d\"] .badge')"):format(bob.uid),
            "the badge gone once the chat is open")
        pa:fill("send-text", "hello from the desktop page")
        pa:click("send-submit")
        pa:wait_text("messages", "hello from the desktop page")
        -- bob has not opened the chat: the 1019 push counts as unread
        pb:wait(("document.querySelector('#friends li[data-uid=\"%d\"] .badge')?.textContent === '2'")
            :format(alice.uid), "two unread on bob's side")
        pb:eval(("document.querySelector('#friends li[data-uid=\"%d\"]').click()"):format(alice.uid))
        pb:wait_text("messages", "hello from the desktop page")
        -- the history holds the greetings before it, in order
        local text = pb:text("messages")
        assert.truthy(text:find("hi bob, it is alice", 1, true) < text:find("hello from the desktop page", 1, true))
        -- on the phone-sized page the chat replaces the list
        assert.equal("none", pb:eval("getComputedStyle(document.getElementById('sidebar')).display"))
        pb:fill("send-text", "and hello from the phone")
        pb:click("send-submit")
        pa:wait_text("messages", "and hello from the phone")
        pb:wait_text("messages", "and hello from the phone")
        pa:shot("web-chat.png")
        pb:shot("web-chat-phone.png")
        -- alice's own on her side: her greeting and her message
        assert.equal(2, pa:eval("document.querySelectorAll('#messages li.mine').length"))
    end)

    it("shows the server's unread counts after a login, and the whole history", function()
        pb:click("back")
        pb:click("logout")
        pb:wait("document.body.dataset.state === 'login' && !document.getElementById('screen-login').hidden",
            "bob logged out")
        for n = 1, 4 do
            pa:fill("send-text", "while bob was away " .. n)
            pa:click("send-submit")
            pa:wait_text("messages", "while bob was away " .. n)
        end
        login(pb, bob)
        -- from the 1026 threads' unread, not from pushes
        pb:wait(("document.querySelector('#friends li[data-uid=\"%d\"] .badge')?.textContent === '4'")
            :format(alice.uid), "four unread after the login")
        pb:eval(("document.querySelector('#friends li[data-uid=\"%d\"]').click()"):format(alice.uid))
        pb:wait_text("messages", "while bob was away 4")
        -- 8 messages in pages of 3, in order
        local texts = pb:eval("[...document.querySelectorAll('#messages li')].map((li) => li.firstChild.textContent)")
        assert.same({ "hi bob, it is alice", "We are friends now!", "hello from the desktop page",
            "and hello from the phone", "while bob was away 1", "while bob was away 2",
            "while bob was away 3", "while bob was away 4" }, texts)
        -- read now: the server counts none at the next login
        pb:click("back")
        pb:click("logout")
        pb:wait("document.body.dataset.state === 'login' && !document.getElementById('screen-login').hidden",
            "bob logged out")
        login(pb, bob)
        pb:wait(("document.querySelector('#friends li[data-uid=\"%d\"]') !== null"):format(alice.uid),
            "alice among bob's friends")
        assert.is_nil(pb:eval(("document.querySelector('#friends li[data-uid=\"%d\"] .badge')?.textContent ?? null")
            :format(alice.uid)))
    end)

    it("says \"logged in elsewhere\" after a kick", function()
        local pc = b:page("alice-again", { width = 1100, height = 760 })
        pc:go(sys.gate_url .. "/")
        login(pc, alice)
        pa:wait("document.body.dataset.state === 'kicked'", "alice's first page kicked")
        assert.equal("You were signed out: your account logged in somewhere else.", pa:text("login-error"))
        pa:shot("web-kicked.png")
        -- the new page chats on
        pb:eval(("document.querySelector('#friends li[data-uid=\"%d\"]').click()"):format(alice.uid))
        pc:eval(("document.querySelector('#friends li[data-uid=\"%d\"]').click()"):format(bob.uid))
        pc:fill("send-text", "from alice's new page")
        pc:click("send-submit")
        pb:wait_text("messages", "from alice's new page")
        pa = pc
    end)

    it("reconnects through the gate after its chat server is killed", function()
        local i = assert(server_of(bob))
        sys:kill_chat(i)
        pb:wait("document.body.dataset.state === 'reconnecting'", "bob reconnecting")
        assert.truthy(pb:text("banner"):find("connection to the chat server was lost", 1, true))
        pb:shot("web-reconnecting-phone.png")
        pb:wait("document.body.dataset.state === 'online'", "bob online again", 20000)
        assert.are_not.equal(i, server_of(bob))
        -- alice may have been on the killed server too: once both are online, they chat on
        pa:wait("document.body.dataset.state === 'online'", "alice online", 20000)
        pb:fill("send-text", "after the move")
        pb:click("send-submit")
        pa:wait_text("messages", "after the move", 15000)
    end)

    it("creates a group whose members chat in it, with unread counts", function()
        pa:eval("document.getElementById('group-new').open = true")
        pa:fill("group-name", "Team web")
        assert(pa:eval(("(() => { const i = document.querySelector('#group-members input[value=\"%d\"]');"
            .. " if (!i) return false; i.checked = true; return true })()"):format(bob.uid)), "bob's box")
        pa:click("group-submit")
        local tid = pa:wait("document.querySelector('#groups li.active')?.dataset.thread ?? null", "the new group open")
        assert.equal("Team web", pa:text("chat-title"))
        -- bob learns of it from the 1069 "created" event
        local li = ("#groups li[data-thread=\"%s\"]"):format(tid)
        pb:wait(("document.querySelector('%s') !== null"):format(li), "the group on bob's page")
        pa:fill("send-text", "hello team")
        pa:click("send-submit")
        pa:wait_text("messages", "hello team")
        pb:wait(("document.querySelector('%s .badge')?.textContent === '1'"):format(li), "one unread in the group")
        pb:eval(("document.querySelector('%s').click()"):format(li))
        -- the sender is named on others' group messages
        pb:wait_text("messages", alice.user .. " · ")
        pb:fill("send-text", "reply to the team")
        pb:click("send-submit")
        pa:wait_text("messages", "reply to the team")
        pa:shot("web-group.png")
    end)

    it("sends a message whose reply was lost again with its unique_id: stored once", function()
        local function open_chat(p, uid)
            p:eval(("document.querySelector('#friends li[data-uid=\"%d\"]').click()"):format(uid))
            p:wait("document.getElementById('chat-title').textContent !== 'Pick a friend to chat'"
                .. " && !document.querySelector('#groups li.active')", "the private chat open")
        end
        open_chat(pa, bob.uid)
        open_chat(pb, alice.uid)
        local text = "sent twice, stored once"
        local chat = sys.chats[assert(server_of(alice))]
        assert(chat.proc:kill("STOP"))
        local ok, err = pcall(function()
            pa:fill("send-text", text)
            pa:click("send-submit")
            -- no reply within request_timeout_ms (or the heartbeat's failure closed the connection)
            pa:wait("document.getElementById('chat-error').textContent.includes('chat server')", "the send to fail")
        end)
        assert(chat.proc:kill("CONT"))
        assert(ok, err)
        -- the server goes on: the first send is stored and pushed
        pb:wait_text("messages", text)
        pa:wait("document.body.dataset.state === 'online'", "alice online", 20000)
        assert.equal(text, pa:eval("document.getElementById('send-text').value"))
        pa:click("send-submit")
        pa:wait("document.getElementById('send-text').value === ''", "the second send answered")
        local function copies(p)
            return p:eval(("[...document.querySelectorAll('#messages li')].filter((li) =>"
                .. " li.firstChild.textContent === %s).length"):format(host.json.encode(text)))
        end
        assert.equal(1, copies(pa))
        local rows = assert(host.db.query("SELECT COUNT(*) AS n FROM chat_message WHERE content = ?", text))
        assert.equal(1, tonumber(rows[1].n))
        assert.equal(1, copies(pb))
    end)

    it("chats with a user of the terminal client", function()
        local loader, handlers = system.load_client()
        local carol = system.account("wc")
        local c = handlers.api.new { gate = sys.gate_url }
        local ok, err = pcall(function()
            sys:register(c, carol)
            assert(c:login(carol.email, carol.password))
            assert(c:add(alice.uid, "hello from the terminal"))
            local li = ("#requests li[data-uid=\"%d\"]"):format(carol.uid)
            pa:wait_text("requests", "hello from the terminal")
            pa:eval(("document.querySelector('%s button.accept').click()"):format(li))
            local function await(kind)
                return assert(util.wait_until(function()
                    local ev = c:next_event(100)
                    return ev and ev.kind == kind and ev
                end, 10000, "the terminal client's " .. kind))
            end
            await("accepted")
            -- the page lists carol once its 1014 is in (which may come after carol's 1015)
            local friend = ("#friends li[data-uid=\"%d\"]"):format(carol.uid)
            pa:wait(("document.querySelector('%s') !== null"):format(friend), "carol among alice's friends")
            pa:eval(("document.querySelector('%s').click()"):format(friend))
            pa:wait_text("messages", "hello from the terminal")
            pa:fill("send-text", "hi terminal, this is a browser")
            pa:click("send-submit")
            assert.equal("hi terminal, this is a browser", await("message").text)
            assert(c:send(alice.uid, "hi browser"))
            pa:wait_text("messages", "hi browser")
        end)
        c:close()
        loader:close()
        assert(ok, err)
    end)
end)

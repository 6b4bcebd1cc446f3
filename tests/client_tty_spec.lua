-- `chathost client` as a person uses it: two terminals (tmux windows on a private tmux
-- server) each run the client against the real system; keys are typed to register, log
-- in, become friends and exchange messages, and each screen is read back to see what a
-- person would see. The tests follow one story and run in order.
local host = require "host"
local system = require "helpers.client_system"
local tmux = require "helpers.client_tmux"
local util = require "helpers.util"
local roles = require "helpers.roles"
local http = require "helpers.http"

local LINE_MAX = 5000 -- client.line_max_bytes here: more than a message (4096) may be

describe("chathost client in a terminal", function()
    local sys, term, dir, config
    local alice, bob
    local wa, wb -- the two windows

    local function client_argv(...)
        local argv = { util.bin(), "client", "-c", config, ... }
        return argv
    end

    setup(function()
        sys = system.start()
        dir = assert(host.fs.mkdtemp("clienttty"))
        config = dir .. "/config.lua"
        assert(host.fs.write(config, "return " .. roles.serialize {
            scripts = { dir = host.root .. "/scripts" },
            client = { gate_url = sys.gate_url, line_max_bytes = LINE_MAX },
        } .. "\n"))
        term = tmux.start()
        alice, bob = system.account("ta"), system.account("tb")
        alice.password, bob.password = "Secret.1", "Other#22"
        system.clear_limits()
    end)

    teardown(function()
        term:kill()
        host.fs.rmtree(dir)
        sys:stop()
    end)

    local function register(w, acc)
        w:wait_for("Choose [1-4]: ")
        w:type("2")
        w:wait_for("User name: ")
        w:type(acc.user)
        w:wait_for("E-mail: ")
        w:type(acc.email)
        w:wait_for("Password: ")
        w:type(acc.password)
        w:wait_for("Confirm password: ")
        w:type(acc.password)
        w:wait_for("Verification code: ")
        w:type(assert(sys:code_for(acc.email)))
        local screen = w:wait_for("You can log in now.")
        acc.uid = tonumber(screen:match("Registered " .. acc.user .. " %(uid (%d+)%)"))
        assert.truthy(acc.uid, screen)
        assert.is_nil(screen:find(acc.password, 1, true)) -- typed hidden
    end

    local function login(w, acc)
        w:wait_for("Choose [1-4]: ", 2)
        w:type("1")
        w:wait_for("E-mail: ", 2)
        w:type(acc.email)
        w:wait_for("Password: ", 2)
        w:type(acc.password)
        w:wait_for("Logged in as " .. acc.user)
    end

    it("registers two accounts, checking each field as it is typed", function()
        wa = term:open("alice", client_argv())
        wb = term:open("bob", client_argv("--images-dir", dir .. "/bob-images"))
        -- a mistake first: the original client's check, in English
        wa:wait_for("Choose [1-4]: ")
        wa:type("2")
        wa:wait_for("User name: ")
        wa:type(alice.user)
        wa:wait_for("E-mail: ")
        wa:type("not-an-address")
        wa:wait_for("E-mail address is not valid")
        wa:type(alice.email)
        wa:wait_for("Password: ")
        wa:type("short")
        wa:wait_for("Password must be 6 to 15 characters of letters, digits and !@#$%^&*.")
        wa:type(alice.password)
        wa:wait_for("Confirm password: ")
        wa:type("Secret.2")
        wa:wait_for("Passwords do not match")
        wa:type(alice.password)
        wa:wait_for("Verification code: ")
        local code = assert(sys:code_for(alice.email))
        wa:type(("%06d"):format((tonumber(code) + 1) % 1000000))
        wa:wait_for("The verification code is wrong")
        wa:type(code)
        local screen = wa:wait_for("You can log in now.")
        alice.uid = tonumber(screen:match("Registered " .. alice.user .. " %(uid (%d+)%)"))
        assert.truthy(alice.uid, screen)
        register(wb, bob)
    end)

    it("logs both in and makes them friends", function()
        login(wa, alice)
        login(wb, bob)
        wa:type("/search " .. bob.user)
        wa:wait_for(("Found %s (uid %d)"):format(bob.user, bob.uid))
        wa:type(("/add %d hello from alice"):format(bob.uid))
        wa:wait_for("Friend request sent")
        wb:wait_for(("%s (uid %d) wants to be your friend: \"hello from alice\""):format(
            alice.user, alice.uid))
        wb:type("/requests")
        wb:wait_for("Friend requests waiting (1)")
        wb:type(("/accept %d Ally from work"):format(alice.uid))
        wb:wait_for(("You and %s (uid %d) are friends now. Your remark for them: \"Ally from "
            .. "work\"."):format(alice.user, alice.uid))
        wb:type("/friends")
        wb:wait_for(("%s (your remark: \"Ally from work\")"):format(alice.user))
        wa:wait_for(("%s (uid %d) accepted your friend request"):format(bob.user, bob.uid))
        wa:type("/friends")
        wa:wait_for("Friends (1):")
    end)

    it("exchanges messages that both screens show, with time and sender", function()
        wa:type(("/chat %d"):format(bob.uid))
        wa:wait_for("Talking to " .. bob.user)
        wa:type("hi bob, how are you?")
        wb:wait_for(alice.user .. ": hi bob, how are you?")
        wb:type(("/chat %s"):format(alice.user))
        wb:wait_for("Talking to " .. alice.user)
        wb:type("fine, thanks alice")
        local screen = wa:wait_for(bob.user .. ": fine, thanks alice")
        assert.truthy(screen:find("%[%d%d:%d%d:%d%d%] " .. bob.user .. ": fine, thanks alice"),
            screen)
        -- each side also shows its own message once the server stored it
        wa:wait_for(alice.user .. ": hi bob, how are you?")
        wb:wait_for(bob.user .. ": fine, thanks alice")
        wa:type("/history 2")
        screen = wa:wait_for("] " .. bob.user .. ": fine, thanks alice", 2)
        assert.truthy(screen:find("%[%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%] " .. alice.user
            .. ": hi bob, how are you%?"), screen)
    end)

    it("prints a message above a line being typed without mangling it", function()
        local typing = "to " .. bob.user .. "> half a sent"
        wa:keys("-l", "half a sent")
        assert.is_true(wa:wait_last_line(typing), wa:screen())
        wb:type("interrupting you")
        wa:wait_for(bob.user .. ": interrupting you")
        -- the message is above; the last line is still the prompt with what was typed
        assert.equal(typing, wa:last_line())
        wa:type("ence")
        wb:wait_for(alice.user .. ": half a sentence")
    end)

    it("clears the line at Ctrl-C in the chat and goes on; Ctrl-C at the menu does not quit",
        function()
            local prompt = "to " .. bob.user .. "> "
            wa:keys("-l", "never sent")
            assert.is_true(wa:wait_last_line(prompt .. "never sent"), wa:screen())
            wa:keys("C-c")
            wa:wait_for("(Line cleared. /quit or Ctrl-D on an empty line leaves.)")
            assert.is_true(wa:wait_last_line((prompt:gsub("%s$", ""))), wa:screen())
            wa:type("after the ctrl-c")
            wb:wait_for(alice.user .. ": after the ctrl-c")
            assert.equal(0, wb:count("never sent"))
            assert.is_nil(wa:exit_status())
        end)

    it("wraps a line wider than the terminal, redrawn without copies", function()
        -- 160 columns: this line takes two rows and a half
        local wide = "wide-start " .. ("0123456789"):rep(38) .. " wide-end"
        wa:keys("-l", wide)
        assert.is_true(wa:wait_last_line("to " .. bob.user .. "> " .. wide), wa:screen())
        assert.equal(1, wa:count("wide-start"))
        wb:type("while you type")
        wa:wait_for(bob.user .. ": while you type")
        assert.is_true(wa:wait_last_line("to " .. bob.user .. "> " .. wide), wa:screen())
        assert.equal(1, wa:count("wide-start"))
        wa:type("")
        wb:wait_for(alice.user .. ": " .. wide)
        wa:wait_for(alice.user .. ": " .. wide) -- its own copy, once stored
        assert.equal(2, wa:count("wide-start"), wa:screen())
    end)

    it("shows the end of a line taller than the screen after ...", function()
        assert(term:tmux("resize-window", "-t", wa.name, "-x", "80", "-y", "12"))
        local tall = "tall-start " .. ("q"):rep(1200) .. " tall-end"
        wa:keys("-l", tall)
        wa:wait_for(" tall-end")
        wb:type("above a tall line")
        wa:wait_for(bob.user .. ": above a tall line")
        assert.is_true(wa:wait_last_line("to " .. bob.user .. "> ..."
            .. ("q"):rep(80 * 11 - #("to " .. bob.user .. "> ...") - 10) .. " tall-end"),
            wa:screen())
        -- neither the start (scrolled off the top, where it could not be erased) nor copies
        assert.equal(0, wa:count("tall-start"), wa:screen())
        assert.equal(1, wa:count(" tall-end"), wa:screen())
        wa:keys("C-u")
        assert.is_true(wa:wait_last_line("to " .. bob.user .. ">"), wa:screen())
        assert(term:tmux("resize-window", "-t", wa.name, "-x", "160", "-y", "50"))
    end)

    it("refuses a message over 4096 bytes with its size, and a line over line_max_bytes",
        function()
            wa:type(("m"):rep(4097))
            wa:wait_for("Not sent: Message is 4097 bytes, the limit is 4096")
            wa:type(("n"):rep(LINE_MAX))
            wa:wait_for(("Not sent: Message is %d bytes, the limit is 4096"):format(LINE_MAX))
            wa:type(("o"):rep(LINE_MAX + 1))
            wa:wait_for(("That line is %d bytes, longer than the %d the client reads; it was "
                .. "not used."):format(LINE_MAX + 1, LINE_MAX))
            wa:type(("p"):rep(4096))
            wb:wait_for(alice.user .. ": " .. ("p"):rep(4096))
        end)

    it("checks /history's N, knows oneself in /search, sends a leading / with //", function()
        wa:type("/history x")
        wa:wait_for("Usage: /history [N], N a number of messages from 1 up (default 20)")
        wa:type("/history 0")
        wa:wait_for("Usage: /history [N]", 2)
        wa:type("/search " .. alice.user)
        wa:wait_for(("Found %s (uid %d) - that is you."):format(alice.user, alice.uid))
        wa:type("/shrug")
        wa:wait_for("Unknown command /shrug; /help lists them. To send a message that starts "
            .. "with /, type it with // (the first / is dropped).")
        wa:type("//shrug")
        wb:wait_for(alice.user .. ": /shrug")
    end)

    it("sends /image; the other screen names it, /save stores it, /url links it", function()
        local png = host.root .. "/tests/fixtures/images/noise.png" -- 270448 bytes
        wa:type("/image " .. dir .. "/none.png")
        wa:wait_for("Image not sent: No such file: " .. dir .. "/none.png")
        wa:type("/image " .. config)
        wa:wait_for("Image not sent: " .. config .. " is not an image the server takes (png, "
            .. "jpeg, gif, webp, bmp)")
        wa:type("/image " .. png)
        wa:wait_for("Sending " .. png .. ": ") -- progress, a line per quarter of the file
        local screen = wa:wait_for("] Sent the image " .. png)
        local name, id = screen:match("Sent the image [^\n]- to " .. bob.user .. " %(uid %d+%): "
            .. "([%w%-]+%.png), 265 KB %(message (%d+)%)%.")
        assert.truthy(id, screen)
        wb:wait_for(("[image from %s: %s, 265 KB] /save %s [PATH]"):format(alice.user, name, id))
        wb:type("/save " .. id)
        local saved = dir .. "/bob-images/" .. name
        wb:wait_for(("Saved the image of message %s to %s (265 KB)."):format(id, saved))
        assert.equal(assert(host.fs.read(png)), host.fs.read(saved))
        wb:type("/save " .. id)
        wb:wait_for(("Not saved: %s exists already; it was not overwritten (/save %s OTHER_PATH)")
            :format(saved, id))
        wb:type("/url " .. id)
        screen = wb:wait_for("Link to the image of message " .. id)
        local path = screen:match("Link to the image of message " .. id .. " %(valid until "
            .. "[%d:]+%): http://127%.0%.0%.1:" .. sys.resource.http_port .. "(/files/%S+)")
        assert.truthy(path, screen)
        local res = assert(http.get(sys.resource.http_port, path))
        assert.equal(200, res.status)
        assert.equal(assert(host.fs.read(png)), res.body)
        wb:type("/history 1")
        wb:wait_for(("] [image from %s: %s, 265 KB] /save %s [PATH]"):format(alice.user, name,
            id))
    end)

    it("after a login, names the chats with unread messages (what was shown is read)", function()
        local menus = wa:count("Choose [1-4]: ")
        wa:type("/logout")
        wa:wait_for("Choose [1-4]: ", menus + 1)
        assert.is_true(wa:wait_last_line("Choose [1-4]:"), wa:screen())
        wa:keys("C-c")
        wa:wait_for("Nothing to cancel here: 4 or Ctrl-D quits.")
        assert.is_nil(wa:exit_status())
        wb:type("one while you were away")
        wb:wait_for(bob.user .. ": one while you were away")
        wb:type("two while you were away")
        wb:wait_for(bob.user .. ": two while you were away")
        wa:wait_for("Choose [1-4]: ", menus + 2) -- asked again after the Ctrl-C
        local emails, passwords = wa:count("E-mail: "), wa:count("Password: ")
        wa:type("1")
        wa:wait_for("E-mail: ", emails + 1)
        wa:type(alice.email)
        wa:wait_for("Password: ", passwords + 1)
        wa:type(alice.password)
        wa:wait_for(("%s (uid %d): 2 unread messages; /chat %d, then /history 2 to read them.")
            :format(bob.user, bob.uid, bob.uid))
        wa:type(("/chat %d"):format(bob.uid))
        wa:wait_for("Talking to " .. bob.user, 2)
        wa:type("back")
        wb:wait_for(alice.user .. ": back")
    end)

    it("makes a group, chats there, lists members and groups, marks it read, and leaves", function()
        wa:type(("/group create club %d"):format(bob.uid))
        local screen = wa:wait_for("Created the group club (id ")
        local id = tonumber(screen:match("Created the group club %(id (%d+)%) with 2 members"))
        assert.truthy(id, screen)
        wb:wait_for(("%s (uid %d) added you to the new group club (id %d). Type /g %d to talk "
            .. "there."):format(alice.user, alice.uid, id, id))
        wb:type("/g " .. id)
        wb:wait_for(("Talking in club (id %d)."):format(id))
        wb:type("hello club")
        wa:wait_for(("[club] %s: hello club"):format(bob.user))
        wa:type("/members")
        wa:wait_for(("%-8d %s (member)"):format(bob.uid, bob.user))
        wa:type("/read")
        wa:wait_for("Marked read.")
        wb:type("/leave")
        wb:wait_for(("You left the group %d."):format(id))
        wa:wait_for(("%s (uid %d) left club (id %d)."):format(bob.user, bob.uid, id))
        wa:type("/groups")
        wa:wait_for(("%-8d club - 1 member, you are owner"):format(id))
        wb:type("/groups")
        wb:wait_for("No groups yet")
    end)

    it("is signed out when the account logs in elsewhere, back at the login menu", function()
        local before = wa:count("Choose [1-4]: ")
        local other = term:open("alice2", client_argv("--email", alice.email, "--password",
            alice.password))
        other:wait_for("Logged in as " .. alice.user)
        wa:wait_for("You were signed out: your account logged in somewhere else.")
        wa:wait_for("Choose [1-4]: ", before + 1)
        other:type("/quit")
        wb:type("/quit")
        wa:type("4")
        assert.equal(0, other:wait_exit(), other:screen())
        assert.equal(0, wb:wait_exit(), wb:screen())
        assert.equal(0, wa:wait_exit(), wa:screen())
    end)
end)

-- `chathost client` as a person uses it: two terminals (tmux windows on a private tmux
-- server) each run the client against the real system; keys are typed to register, log
-- in, become friends and exchange messages, and each screen is read back to see what a
-- person would see. The tests follow one story and run in order.
local host = require "host"
local system = require "helpers.client_system"
local tmux = require "helpers.client_tmux"
local util = require "helpers.util"
local roles = require "helpers.roles"

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
            client = { gate_url = sys.gate_url },
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
        wb = term:open("bob", client_argv())
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
        wb:type(("/accept %d"):format(alice.uid))
        wb:wait_for(("You and %s (uid %d) are friends now"):format(alice.user, alice.uid))
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

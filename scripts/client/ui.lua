-- client.ui: the interactive terminal UI, the original client's dialogs as prompts on
-- host.tty: a menu (log in, register, reset password, quit), each form asking its fields
-- one by one and checking each as it is typed (client.checks), then the chat session
-- (client.ui_chat). Events print above the prompt as they arrive; a kick or a connection
-- that cannot be re-established cancels the prompt and returns to the menu.
local host = require "host"
local api = require "client.api"
local checks = require "client.checks"
local format = require "client.format"
local settings = require "client.settings"
local ui_chat = require "client.ui_chat"
local errors = require "lib.errors"

local M = {}

local function say(text) host.tty.print(text) end

-- ask(prompt, hidden?) -> line | nil, "eof" | "interrupted" | "cancelled". A line longer
-- than client.line_max_bytes is refused whole (the terminal kept only its start) and
-- asked again.
local function ask(prompt, hidden)
    while true do
        local line, bytes = host.tty.read_line { prompt = prompt, hidden = hidden,
            max_bytes = settings.line_max_bytes }
        if not line or not tonumber(bytes) then return line, bytes end
        say(("That line is %d bytes, longer than the %d the client reads; it was not used.")
            :format(bytes, settings.line_max_bytes))
    end
end
M.ask, M.say = ask, say

-- Asks until check(line) passes (its message is shown otherwise): -> line | nil (cancelled)
local function field(prompt, check, hidden)
    while true do
        local line = ask(prompt, hidden)
        if not line then return nil end
        if not hidden then line = checks.trim(line) end
        local ok, msg = check(line)
        if ok then return line end
        say(msg)
    end
end

local function yes(prompt)
    local line = ask(prompt)
    return line ~= nil and line:match("^%s*[yY]") ~= nil
end

-- Requests a code for email; -> true | nil
local function request_code(c, email, module)
    say("Sending a verification code to " .. email .. " ...")
    local ok, err = c:get_code(email, module)
    if not ok then
        say(err)
        return nil
    end
    say("A verification code was sent to " .. email .. ". Check your mail.")
    return true
end

-- Asks for the code and submits(code) until it is accepted, or the person gives up.
-- submit -> result | nil, sentence, code
local function with_code(c, email, module, submit)
    while true do
        local code = field("Verification code: ", checks.code)
        if not code then return nil end
        local res, err, ecode = submit(code)
        if res then return res end
        say(err)
        if ecode == errors.VarifyExpired then
            if not yes("Send a new code? [y/n]: ") or not request_code(c, email, module) then
                return nil
            end
        elseif ecode ~= errors.VarifyCodeErr and ecode ~= "invalid" then
            return nil
        end
    end
end

function M.register(c)
    say("Register a new account (Ctrl-C to go back).")
    local user = field("User name: ", checks.user)
    local email = user and field("E-mail: ", checks.email)
    local pw = email and field("Password: ", checks.password, true)
    local confirm = pw and field("Confirm password: ",
        function(s) return checks.confirm(pw, s) end, true)
    if not confirm or not request_code(c, email, "register") then return end
    local reg = with_code(c, email, "register", function(code)
        return c:register { user = user, email = email, password = pw, confirm = confirm,
            code = code }
    end)
    if reg then
        say(("Registered %s (uid %d). You can log in now."):format(reg.user, reg.uid))
    end
end

function M.reset(c)
    say("Reset your password (Ctrl-C to go back).")
    local user = field("User name: ", function(s)
        if s == "" then return nil, checks.USER_EMPTY end
        return true
    end)
    local email = user and field("E-mail: ", checks.email)
    local pw = email and field("New password: ", checks.password, true)
    if not pw or not request_code(c, email, "reset") then return end
    local done = with_code(c, email, "reset", function(code)
        return c:reset { user = user, email = email, password = pw, code = code }
    end)
    if done then say("The password of " .. done.user .. " was changed. You can log in now.") end
end

-- Logs in (asking what is not given) and runs the chat session: -> "menu" | "quit"
function M.login(c, email, pw)
    email = email or field("E-mail: ", checks.login_email)
    pw = email and (pw or field("Password: ", checks.password, true))
    if not pw then return "menu" end
    say("Logging in as " .. email .. " ...")
    local me, err = c:login(email, pw)
    if not me then
        say(err)
        return "menu"
    end
    return ui_chat.run(c, { ask = ask, say = say })
end

local CHOICES = {
    ["1"] = "login", l = "login", login = "login",
    ["2"] = "register", r = "register", register = "register",
    ["3"] = "reset", reset = "reset",
    ["4"] = "quit", q = "quit", quit = "quit",
}

local function menu(c)
    while true do
        say("1) log in   2) register   3) reset password   4) quit")
        local line, err = ask("Choose [1-4]: ")
        while err == "interrupted" do -- Ctrl-C cancels forms; here there is none to cancel
            say("Nothing to cancel here: 4 or Ctrl-D quits.")
            line, err = ask("Choose [1-4]: ")
        end
        if not line then return end
        local choice = CHOICES[checks.trim(line):lower()]
        if choice == "quit" then return end
        if choice == "login" then
            if M.login(c) == "quit" then return end
        elseif choice == "register" then
            M.register(c)
        elseif choice == "reset" then
            M.reset(c)
        else
            say("Type 1, 2, 3 or 4.")
        end
    end
end

-- On every event: a line above the prompt (read receipts are not shown), and what was
-- printed is marked read; a kick or a lost session ends the prompt.
local function on_event(c, ev)
    if ev.kind == "read" then return end
    say(format.event(ev, c.names))
    if ev.kind == "message" or ev.kind == "group_message" or ev.kind == "image" then
        c:mark_shown(ev.thread_id, ev.message_id)
    elseif ev.kind == "accepted" and type(ev.messages) == "table" and #ev.messages > 0 then
        c:mark_shown(ev.thread_id, ev.messages[#ev.messages].message_id)
    end
    if ev.kind == "kicked" or ev.kind == "offline" then host.tty.cancel() end
end

-- run{gate=, ca_file=?, email=?, password=?} -> exit status
function M.run(opts)
    local c
    c = api.new { gate = opts.gate, ca_file = opts.ca_file, images_dir = opts["images-dir"],
        on_event = function(ev) on_event(c, ev) end }
    say("chathost client - gate " .. c.http.gate .. ". Ctrl-C cancels a form, Ctrl-D quits.")
    local quit = opts.email and opts.password and M.login(c, opts.email, opts.password) == "quit"
    if not quit then menu(c) end
    c:close()
    say("Bye.")
    host.tty.close()
    return 0
end

return M

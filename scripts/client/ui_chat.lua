-- client.ui_chat: the chat session of the terminal UI, after a login: the friend list and
-- pending applications first, then commands (/search, /add, /accept, /friends,
-- /requests, /chat, /history, /help, /logout, /quit) and plain lines sent to the friend
-- picked with /chat (a line starting with // sends the rest, from its second /). Right
-- after the login, each friend whose thread holds messages from them after one's own
-- last message there is named with their count. Ctrl-C clears the line being typed;
-- Ctrl-D on an empty line quits. Incoming events are printed by client.ui's event handler.
local checks = require "client.checks"
local format = require "client.format"

local M = {}

local HELP = {
    "/search TEXT           find a user by name or uid",
    "/add UID [greeting]    send a friend request",
    "/accept UID [remark]   accept a friend request",
    "/friends               your friends",
    "/requests              friend requests waiting for you",
    "/chat UID              talk to a friend: plain lines are then sent to them",
    "/history [N]           the last N messages with that friend (default 20)",
    "/logout                back to the login menu",
    "/quit                  leave (Ctrl-D on an empty line too; Ctrl-C clears the line)",
    "//text                 send a message that starts with /: the line from its second /",
}

local Session = {}
Session.__index = Session

function Session:show_friends()
    local list = self.c:friends()
    if #list == 0 then
        self.say("No friends yet. Find people with /search NAME, then /add UID.")
        return
    end
    self.say(("Friends (%d):"):format(#list))
    for _, f in ipairs(list) do self.say(format.friend(f)) end
end

-- After a login: per friend, the messages from them after one's own last message in the
-- thread (all of them when one never wrote there). There are no read marks yet, so this is
-- what can be said truthfully; the sentence says what the number counts.
function Session:show_waiting()
    local threads = self.c:known_threads()
    if not threads then return end -- the summary is a courtesy; the session goes on
    for _, f in ipairs(self.c:friends()) do
        local list = threads[f.uid] and self.c:history(f.uid, math.huge) or {}
        local n = 0
        for i = #list, 1, -1 do
            if list[i].mine then break end
            n = n + 1
        end
        if n > 0 then
            self.say(("%s: %d message%s from them since your last message there; /chat %d, "
                .. "then /history %d to read %s."):format(format.who(f.name, f.uid), n,
                n == 1 and "" or "s", f.uid, n, n == 1 and "it" or "them"))
        end
    end
end

function Session:show_requests()
    local list = self.c:requests()
    if #list == 0 then
        self.say("No friend requests waiting.")
        return
    end
    self.say(("Friend requests waiting (%d), /accept UID to accept:"):format(#list))
    for _, r in ipairs(list) do self.say(format.request(r)) end
end

-- The uid a command names: a number, or the name of a friend.
function Session:uid_of(word)
    if not word or word == "" then return nil end
    if word:match("^%d+$") then return tonumber(word) end
    for _, f in ipairs(self.c:friends()) do
        if f.name == word then return f.uid end
    end
    return nil
end

function Session:report(ok, err)
    if not ok then self.say(err) end
    return ok
end

local COMMANDS = {}

function COMMANDS.help(s) for _, line in ipairs(HELP) do s.say(line) end end
function COMMANDS.friends(s) s:show_friends() end
function COMMANDS.requests(s) s:show_requests() end

function COMMANDS.search(s, rest)
    local user, err = s.c:search(rest)
    if not s:report(user, err) then return end
    if user.uid == s.c:my_uid() then
        return s.say(("Found %s - that is you."):format(format.who(user.name, user.uid)))
    end
    local tail = s.c:is_friend(user.uid) and "your friend; /chat " .. user.uid
        or "/add " .. user.uid .. " to send a friend request"
    s.say(("Found %s - %s."):format(format.who(user.name, user.uid), tail))
end

function COMMANDS.add(s, rest)
    local word, greeting = rest:match("^(%S+)%s*(.*)$")
    if not word then return s.say("Usage: /add UID [greeting]") end
    local uid = s:uid_of(word) or word
    -- a uid typed without a /search first: look it up, for its name (and that it exists)
    if tonumber(uid) and not s.c:name_of(tonumber(uid)) then
        local user, err = s.c:search(tostring(uid))
        if not s:report(user, err) then return end
    end
    if s:report(s.c:add(uid, greeting)) then
        s.say(("Friend request sent to %s."):format(format.who(s.c:name_of(tonumber(uid)), uid)))
    end
end

function COMMANDS.accept(s, rest)
    local word, remark = rest:match("^(%S+)%s*(.*)$")
    if not word then return s.say("Usage: /accept UID [remark]") end
    local friend, err = s.c:accept(s:uid_of(word) or word, remark ~= "" and remark or nil)
    if not s:report(friend, err) then return end
    local noted = remark ~= "" and (' Your remark for them: "%s".'):format(format.clean(remark))
        or ""
    s.say(("You and %s are friends now.%s Type /chat %d to talk."):format(
        format.who(friend.name, friend.uid), noted, friend.uid))
end

function COMMANDS.chat(s, rest)
    local uid = s:uid_of(checks.trim(rest))
    if not uid then return s.say("Usage: /chat UID (see /friends)") end
    if not s.c:is_friend(uid) then
        return s.say(("%s is not your friend: /add %d first."):format(tostring(uid), uid))
    end
    s.peer = uid
    s.say(("Talking to %s. Plain lines are sent to them; /history shows earlier messages."):format(
        format.who(s.c:name_of(uid), uid)))
end

function COMMANDS.history(s, rest)
    if not s.peer then return s.say("Pick a friend with /chat UID first.") end
    local word = checks.trim(rest)
    local n = word:match("^%d+$") and tonumber(word)
    if word ~= "" and not (n and n >= 1) then
        return s.say(("Usage: /history [N], N a number of messages from 1 up (default %d)")
            :format(s.c.cfg.history_default))
    end
    local list, err = s.c:history(s.peer, n)
    if not s:report(list, err) then return end
    if #list == 0 then return s.say("No messages yet.") end
    for _, m in ipairs(list) do s.say(format.history(m, s.c.me and s.c.me.name)) end
end

function COMMANDS.logout(s) return "menu" end
function COMMANDS.quit(s) return "quit" end

function Session:send(line)
    if not self.peer then
        return self.say("Pick a friend with /chat UID first (/help lists the commands).")
    end
    local sent, err = self.c:send(self.peer, line)
    if not sent then return self.say("Not sent: " .. err) end
    self.say(format.sent(sent, self.c.me and self.c.me.name))
end

-- handle(line) -> nil | "menu" | "quit"
function Session:handle(line)
    if not line:find("%S") then return nil end
    if line:sub(1, 2) == "//" then return self:send(line:sub(2)) end
    local cmd, rest = line:match("^/(%a+)%s*(.*)$")
    local fn = cmd and COMMANDS[cmd:lower()]
    if not fn and line:sub(1, 1) == "/" then
        return self.say(("Unknown command %s; /help lists them. To send a message that starts "
            .. "with /, type it with // (the first / is dropped)."):format(
            format.clean(line:match("^%S+"))))
    end
    if not cmd then return self:send(line) end
    return fn(self, rest)
end

function Session:prompt()
    if not self.peer then return "> " end
    return ("to %s> "):format(format.clean(self.c:name_of(self.peer) or self.peer))
end

-- run(client, term{ask, say}) -> "menu" | "quit"
function M.run(c, term)
    local s = setmetatable({ c = c, ask = term.ask, say = term.say }, Session)
    s.say(("Logged in as %s on chat server %s. /help lists the commands."):format(
        format.who(c.me.name, c.me.uid), tostring(c.server)))
    s:show_friends()
    s:show_requests()
    s:show_waiting()
    while c.state == "online" or c.state == "reconnecting" do
        local line, err = s.ask(s:prompt())
        if err == "interrupted" then
            s.say("(Line cleared. /quit or Ctrl-D on an empty line leaves.)")
        elseif not line then
            if err == "cancelled" then return "menu" end
            c:logout()
            return "quit"
        end
        local next_step = line and s:handle(line)
        if next_step then
            c:logout()
            return next_step
        end
    end
    return "menu"
end

return M

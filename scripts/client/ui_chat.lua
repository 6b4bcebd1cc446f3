-- client.ui_chat: the chat session of the terminal UI, after a login: the friend list and
-- pending applications first, then commands (/search, /add, /accept, /friends,
-- /requests, /chat, /history, /image, /save, /url, /group, /groups, /g, /invite, /members,
-- /leave, /read, /help, /logout, /quit) and plain lines sent to the friend picked with
-- /chat or the group picked with /g (a line starting with // sends the rest, from its
-- second /). Right after the login, each thread with unread messages (the server's
-- count: messages of others after the read mark) is named with its count; what is shown
-- (a message as it arrives, /history) is marked read. Ctrl-C clears the line being
-- typed; Ctrl-D on an empty line quits. Incoming events are printed by client.ui's event
-- handler.
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
    "/history [N]           the last N messages with that friend or group (default 20)",
    "/image PATH            send an image file (png, jpeg, gif, webp, bmp) to that friend",
    "/save ID [PATH]        save the image of message ID (default: your images folder)",
    "/url ID                a web link to the image of message ID, valid for a few minutes",
    "/group create NAME [UID...]  a new group with some of your friends",
    "/groups                your groups",
    "/g GROUP               talk in a group (its id or name): plain lines are sent there",
    "/invite UID...         add friends to the group you talk in",
    "/members               the members of that group",
    "/leave                 leave that group",
    "/read                  mark the chat you are in read",
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

-- After a login: each thread with unread messages (others' messages after the read
-- mark, as the server counts them in 1026) and how to read them.
function Session:show_waiting()
    local list = self.c:unread_threads()
    if not list then return end -- the summary is a courtesy; the session goes on
    local me = self.c:my_uid()
    for _, t in ipairs(list) do
        local n = t.unread
        local what, how
        if t.type == "group" then
            what, how = ("Group %s (id %d)"):format(format.clean(t.name), t.thread_id),
                "/g " .. t.thread_id
        else
            local other = t.user1_id == me and t.user2_id or t.user1_id
            what, how = format.who(self.c:name_of(other), other), "/chat " .. other
        end
        self.say(("%s: %d unread message%s; %s, then /history %d to read %s."):format(what, n,
            n == 1 and "" or "s", how, n, n == 1 and "it" or "them"))
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
    local last = friend.messages[#friend.messages] -- the greetings: shown with the request
    if last then s.c:mark_shown(friend.thread_id, last.message_id) end
end

function COMMANDS.chat(s, rest)
    local uid = s:uid_of(checks.trim(rest))
    if not uid then return s.say("Usage: /chat UID (see /friends)") end
    if not s.c:is_friend(uid) then
        return s.say(("%s is not your friend: /add %d first."):format(tostring(uid), uid))
    end
    s.peer, s.group = uid, nil
    s.say(("Talking to %s. Plain lines are sent to them; /history shows earlier messages."):format(
        format.who(s.c:name_of(uid), uid)))
end

function COMMANDS.history(s, rest)
    if not s.peer and not s.group then
        return s.say("Pick a friend with /chat UID or a group with /g GROUP first.")
    end
    local word = checks.trim(rest)
    local n = word:match("^%d+$") and tonumber(word)
    if word ~= "" and not (n and n >= 1) then
        return s.say(("Usage: /history [N], N a number of messages from 1 up (default %d)")
            :format(s.c.cfg.history_default))
    end
    local list, err
    if s.group then
        list, err = s.c:thread_history(s.group, n)
    else
        list, err = s.c:history(s.peer, n)
    end
    if not s:report(list, err) then return end
    if #list == 0 then return s.say("No messages yet.") end
    for _, m in ipairs(list) do s.say(format.history(m, s.c.me and s.c.me.name)) end
    local last = list[#list]
    s.c:mark_shown(s.group or s.c.threads[s.peer], last.message_id)
end

local PROGRESS_STEP = 25 -- /image prints its progress each time this many percent more are sent

function COMMANDS.image(s, rest)
    local path = checks.trim(rest)
    if path == "" then
        return s.say("Usage: /image PATH (an image file for the friend you talk to)")
    end
    if not s.peer then
        return s.say("Pick a friend with /chat UID first: images go to one friend.")
    end
    local shown = 0
    local sent, err = s.c:send_image(s.peer, path, function(done, total)
        local pct = math.floor(done * 100 / total)
        if pct >= shown + PROGRESS_STEP and done < total then
            shown = pct - pct % PROGRESS_STEP
            s.say(("Sending %s: %d%% (%d of %d KB)"):format(path, pct, math.ceil(done / 1024),
                math.ceil(total / 1024)))
        end
    end)
    if not sent then return s.say("Image not sent: " .. err) end
    s.say(("[%s] Sent the image %s to %s: %s, %d KB (message %d)."):format(
        format.clock(sent.time), format.clean(path), format.who(s.c:name_of(sent.to), sent.to),
        format.clean(sent.name), math.ceil(sent.size / 1024), sent.message_id))
end

function COMMANDS.save(s, rest)
    local id, path = rest:match("^(%S+)%s*(.-)%s*$")
    if not id or not id:match("^%d+$") then
        return s.say("Usage: /save ID [PATH] (ID: the message id the image line names)")
    end
    local saved, err = s.c:save_image(tonumber(id), path ~= "" and path or nil)
    if not saved then return s.say("Not saved: " .. err) end
    s.say(("Saved the image of message %d to %s (%d KB)."):format(saved.message_id,
        format.clean(saved.path), math.ceil(saved.size / 1024)))
end

function COMMANDS.url(s, rest)
    local id = checks.trim(rest)
    if not id:match("^%d+$") then return s.say("Usage: /url ID (the message id of an image)") end
    local r, err = s.c:image_url(tonumber(id))
    if not r then return s.say("No link: " .. err) end
    s.say(("Link to the image of message %s (valid until %s): %s"):format(id,
        os.date("%H:%M:%S", tonumber(r.expires) or os.time()), r.url))
end

-- The group being talked in, or a sentence saying how to pick one: -> thread_id | nil
function Session:current_group()
    if not self.group then self.say("Pick a group with /g GROUP first (/groups lists yours).") end
    return self.group
end

function COMMANDS.group(s, rest)
    local words = {}
    for w in rest:gmatch("%S+") do words[#words + 1] = w end
    if words[1] ~= "create" or not words[2] then
        return s.say("Usage: /group create NAME [UID...] (NAME one word; the UIDs your friends)")
    end
    local g, err = s.c:create_group(words[2], { unpack(words, 3) })
    if not s:report(g, err) then return end
    s.peer, s.group = nil, g.thread_id
    s.say(("Created the group %s (id %d) with %d member%s. Plain lines are sent there now.")
        :format(format.clean(g.name), g.thread_id, #g.members, #g.members == 1 and "" or "s"))
end

function COMMANDS.groups(s)
    local list, err = s.c:my_groups()
    if not s:report(list, err) then return end
    if #list == 0 then return s.say("No groups yet: /group create NAME [UID...] makes one.") end
    s.say(("Your groups (%d):"):format(#list))
    for _, g in ipairs(list) do
        s.say(("  %-8d %s - %d member%s, you are %s"):format(g.thread_id, format.clean(g.name),
            g.member_count, g.member_count == 1 and "" or "s", g.role))
    end
end

function COMMANDS.g(s, rest)
    local tid = s.c:group_of(checks.trim(rest))
    if not tid then return s.say("Usage: /g GROUP (its id, or its name; /groups lists them)") end
    s.peer, s.group = nil, tid
    local g = s.c.groups[tid]
    s.say(("Talking in %s. Plain lines are sent there; /history shows earlier messages.")
        :format(g and ("%s (id %d)"):format(format.clean(g.name), tid) or ("group " .. tid)))
end

function COMMANDS.invite(s, rest)
    local tid = s:current_group()
    if not tid then return end
    local list = {}
    for w in rest:gmatch("%S+") do list[#list + 1] = s:uid_of(w) or w end
    local added, err = s.c:invite(tid, list)
    if not s:report(added, err) then return end
    if #added == 0 then return s.say("They are all in the group already.") end
    local names = {}
    for i, u in ipairs(added) do names[i] = format.who(s.c:name_of(u), u) end
    s.say("Added " .. table.concat(names, ", ") .. ".")
end

function COMMANDS.members(s)
    local tid = s:current_group()
    if not tid then return end
    local list, err = s.c:members(tid)
    if not s:report(list, err) then return end
    s.say(("Members (%d):"):format(#list))
    for _, m in ipairs(list) do
        s.say(("  %-8d %s (%s)"):format(m.uid, format.clean(m.name), m.role))
    end
end

function COMMANDS.leave(s)
    local tid = s:current_group()
    if not tid then return end
    if s:report(s.c:leave(tid)) then
        s.group = nil
        s.say(("You left the group %d."):format(tid))
    end
end

function COMMANDS.read(s)
    local tid = s.group or (s.peer and s.c.threads[s.peer])
    if not tid then return s.say("Pick a friend with /chat UID or a group with /g GROUP first.") end
    local list, err = s.c:thread_history(tid, 1)
    if not s:report(list, err) then return end
    if #list == 0 then return s.say("Nothing to mark: no messages yet.") end
    local cursor, merr = s.c:mark_read(tid, list[#list].message_id)
    if s:report(cursor, merr) then s.say("Marked read.") end
end

function COMMANDS.logout(s) return "menu" end
function COMMANDS.quit(s) return "quit" end

function Session:send(line)
    if self.group then
        local sent, err = self.c:send_group(self.group, line)
        if not sent then return self.say("Not sent: " .. err) end
        return self.say(format.sent(sent, self.c.me and self.c.me.name))
    end
    if not self.peer then
        return self.say("Pick a friend with /chat UID or a group with /g GROUP first (/help "
            .. "lists the commands).")
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
    if self.group then
        local g = self.c.groups[self.group]
        return ("in %s> "):format(format.clean(g and g.name or self.group))
    end
    if not self.peer then return "> " end
    return ("to %s> "):format(format.clean(self.c:name_of(self.peer) or self.peer))
end

-- run(client, term{ask, say}) -> "menu" | "quit"
function M.run(c, term)
    local s = setmetatable({ c = c, ask = term.ask, say = term.say }, Session)
    s.say(("Logged in as %s on chat server %s. /help lists the commands."):format(
        format.who(c.me.name, c.me.uid), tostring(c.server)))
    if c.res_error then s.say(c.res_error .. "; chat works without them.") end
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

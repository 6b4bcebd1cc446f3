-- client.format: the lines the terminal UI prints: events as they arrive (with time and
-- sender name), friends, applications, history. Text from other people is shown with its
-- control characters replaced, so a message cannot drive the terminal.
local M = {}

-- Control characters (C0 but the line feed, DEL, C1) -> "?"
function M.clean(s)
    s = tostring(s or "")
    return (s:gsub("[%z\1-\9\11-\31\127]", "?"):gsub("\194[\128-\159]", "?"))
end

-- "YYYY-MM-DD HH:MM:SS" (the server's chat_time) -> "HH:MM:SS"; now when there is none.
function M.clock(time)
    local hms = type(time) == "string" and time:match("(%d%d:%d%d:%d%d)")
    return hms or os.date("%H:%M:%S")
end

-- ': "greeting"', or nothing for an empty one
local function quoted(s)
    if not s or s == "" then return "" end
    return ': "' .. M.clean(s) .. '"'
end

function M.who(name, uid)
    return ("%s (uid %s)"):format(M.clean(name or "?"), tostring(uid))
end

-- "name (uid N)" of each uid a group event names
local function people(ev, names)
    local out = {}
    for i, u in ipairs(type(ev.uids) == "table" and ev.uids or {}) do
        out[i] = M.who(names and names[u] or ("user " .. tostring(u)), u)
    end
    return table.concat(out, ", ")
end

-- A group change (1069) as a sentence; names: uid -> name the client knows.
local GROUP_CHANGES = {
    created = function(ev, g, by)
        return ("%s added you to the new group %s. Type /g %d to talk there."):format(by, g,
            ev.thread_id)
    end,
    joined = function(ev, g, by, names)
        if ev.me then
            return ("%s added you to the group %s. Type /g %d to talk there."):format(by, g,
                ev.thread_id)
        end
        return ("%s added %s to %s."):format(by, people(ev, names), g)
    end,
    left = function(ev, g, by, names)
        local owner = ev.owner_uid and (" %s owns it now."):format(
            M.who(names and names[ev.owner_uid] or "user " .. ev.owner_uid, ev.owner_uid)) or ""
        return ("%s left %s.%s"):format(by, g, owner)
    end,
    removed = function(ev, g, by, names)
        if ev.me then return ("%s removed you from %s."):format(by, g) end
        return ("%s removed %s from %s."):format(by, people(ev, names), g)
    end,
    role = function(ev, g, by, names)
        return ("%s made %s %s of %s."):format(by, people(ev, names),
            ev.role == "admin" and "an admin" or "a member", g)
    end,
    owner = function(ev, g, by, names)
        return ("%s handed %s to %s."):format(by, g,
            M.who(names and names[ev.owner_uid] or "user " .. tostring(ev.owner_uid), ev.owner_uid))
    end,
    updated = function(ev, g, by)
        return ("%s changed the group: it is %s now, invites by %s."):format(by, g,
            ev.invite_policy == "admins" and "admins only" or "any member")
    end,
}

-- "[image from bob: NAME, N KB] /save ID [PATH]" (size unknown: no KB)
function M.image(who, name, size, id)
    local kb = tonumber(size) and (", %d KB"):format(math.ceil(size / 1024)) or ""
    return ("[image from %s: %s%s] /save %s [PATH]"):format(M.clean(who), M.clean(name), kb,
        tostring(id))
end

local EVENTS = {
    image = function(ev)
        return M.image(ev.name, ev.img_name, ev.size, ev.message_id)
    end,
    message = function(ev)
        return ("%s: %s"):format(M.clean(ev.name), M.clean(ev.text)), ev.time
    end,
    group_message = function(ev)
        return ("[%s] %s: %s"):format(M.clean(ev.group), M.clean(ev.name), M.clean(ev.text)),
            ev.time
    end,
    group_event = function(ev, names)
        local fn = GROUP_CHANGES[ev.change]
        local g = ("%s (id %s)"):format(M.clean(ev.group or "a group"), tostring(ev.thread_id))
        local by = M.who(ev.by_name or ("user " .. tostring(ev.by)), ev.by)
        if not fn then return ("%s changed %s."):format(by, g) end
        return fn(ev, g, by, names)
    end,
    apply = function(ev)
        return ("%s wants to be your friend%s. Type /accept %d to accept."):format(
            M.who(ev.name, ev.uid), quoted(ev.greeting), ev.uid)
    end,
    accepted = function(ev)
        return ("%s accepted your friend request. Type /chat %d to talk."):format(
            M.who(ev.name, ev.uid), ev.uid)
    end,
    kicked = function(ev) return ev.message end,
    disconnected = function(ev) return ev.message .. "; logging in again..." end,
    reconnected = function(ev)
        return "Connected again (chat server " .. tostring(ev.server) .. ")."
    end,
    offline = function(ev) return ev.message .. ". You are signed out." end,
}

-- event(ev, names?) -> "[HH:MM:SS] line" (names: uid -> name, for group events)
function M.event(ev, names)
    local fn = EVENTS[ev.kind]
    local text, time
    if fn then
        text, time = fn(ev, names)
    else
        text = ("(push %s)"):format(tostring(ev.id))
    end
    return ("[%s] %s"):format(M.clock(time), text)
end

function M.friend(f)
    local nick = f.nick and f.nick ~= "" and f.nick ~= f.name and (" - " .. M.clean(f.nick)) or ""
    local remark = f.back and f.back ~= "" and f.back ~= f.name
        and (' (your remark: "%s")'):format(M.clean(f.back)) or ""
    return ("  %-8d %s%s%s"):format(f.uid, M.clean(f.name), nick, remark)
end

function M.request(r)
    return ("  %-8d %s%s"):format(r.uid, M.clean(r.name), quoted(r.greeting))
end

-- A history item: "[YYYY-MM-DD HH:MM:SS] name: text"
function M.history(m, my_name)
    local who = m.mine and (my_name or "me") or (m.name or ("user " .. tostring(m.from)))
    if m.image then
        local line = m.uploading
            and ("[image from %s: %s] (still uploading)"):format(M.clean(who), M.clean(m.text))
            or M.image(who, m.text, m.size, m.message_id)
        return ("[%s] %s"):format(tostring(m.time or "?"), line)
    end
    return ("[%s] %s: %s"):format(tostring(m.time or "?"), M.clean(who), M.clean(m.text))
end

-- The line that confirms a message of one's own once the server stored it.
function M.sent(r, my_name)
    return ("[%s] %s: %s"):format(M.clock(r.time), M.clean(my_name or "me"), M.clean(r.text))
end

return M

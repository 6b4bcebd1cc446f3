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

local EVENTS = {
    message = function(ev)
        return ("%s: %s"):format(M.clean(ev.name), M.clean(ev.text)), ev.time
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

-- event(ev) -> "[HH:MM:SS] line"
function M.event(ev)
    local fn = EVENTS[ev.kind]
    local text, time
    if fn then
        text, time = fn(ev)
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
    return ("[%s] %s: %s"):format(tostring(m.time or "?"), M.clean(who), M.clean(m.text))
end

-- The line that confirms a message of one's own once the server stored it.
function M.sent(r, my_name)
    return ("[%s] %s: %s"):format(M.clock(r.time), M.clean(my_name or "me"), M.clean(r.text))
end

return M

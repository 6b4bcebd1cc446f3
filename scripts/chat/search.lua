-- 1007 search -> 1008 (docs/protocol.md §6): the text typed in the client's search box
-- ({uid: text}); all digits looks a user up by uid, anything else by name. The reply has
-- the public profile only: never a password hash or an e-mail (not even one's own).
local host = require "host"
local errors = require "lib.errors"
local validate = require "lib.validate"
local users = require "lib.users"
local reply = require "chat.reply"
local msgids = require "lib.msgids"

local MSG = msgids.SEARCH_USER
local MAX_TEXT = 64 -- longer than any name or uid: cannot match

-- The search text: a JSON string, or a number the client sent for an all-digit text.
local function text_of(body)
    local v = body.uid
    if v == nil or v == host.null then
        return nil, { error = errors.InvalidParams, field = "uid" }
    end
    if type(v) == "number" and v == math.floor(v) and v >= 0 and v < 2 ^ 53 then
        v = string.format("%d", v)
    end
    if type(v) ~= "string" then return nil, { error = errors.Error_Json, field = "uid" } end
    if v == "" then return nil, { error = errors.InvalidParams, field = "uid" } end
    return v
end

local function find(text)
    if #text > MAX_TEXT then return nil end
    if text:match("^%d+$") then
        local uid = tonumber(text)
        if not validate.uid(uid) then return nil end
        return users.profile(uid)
    end
    local row, err = users.by_name(text)
    if not row then return nil, err end
    return users.public(row)
end

return function(_, body)
    local text, bad = text_of(body)
    if not text then return bad end
    local user, err = find(text)
    if err then return reply.failed(MSG, "search", err) end
    if not user then return { error = errors.UidInvalid } end
    return { error = errors.Success, uid = user.uid, name = user.name, nick = user.nick,
        desc = user.desc, sex = user.sex, icon = user.icon }
end

-- chat.fanout: one push (a JSON body, encoded once) to many users: a group's members
-- (docs/protocol.md §6.6). Sessions on this server get it directly; for the others one
-- MGET of uip_ finds their servers, and each server gets the body once with the list of
-- its users (chat.push.post_many, one NotifyBatch item per server), in the sender's order.
-- Offline users get nothing: they read it from history.
local host = require "host"
local keys = require "lib.keys"
local push = require "chat.push"
local settings = require "chat.settings"

local M = {}

local MGET_MAX = 500 -- keys per MGET: well below redis.max_pending's worth of work

-- Server names of uids (false: offline) -> array | nil, err
local function servers_of(uids)
    local out = {}
    for first = 1, #uids, MGET_MAX do
        local cmd = { "MGET" }
        for i = first, math.min(#uids, first + MGET_MAX - 1) do
            cmd[#cmd + 1] = keys.user_server(uids[i])
        end
        local res, err = host.redis.call(unpack(cmd))
        if not res then return nil, err end
        for i = 1, #cmd - 1 do
            local s = res[i]
            out[first + i - 1] = type(s) == "string" and s or false
        end
    end
    return out
end

-- send(session, uids, msg_id, body, except?) -> the number of users with a session here
-- and of the servers the body was queued for. except: a uid left out (the sender).
function M.send(session, uids, msg_id, body, except)
    local here, remote = host.sessions.send(uids, msg_id, body, except) -- one call, not one a member
    if not remote then return here, 0 end
    local servers, err = servers_of(remote)
    if not servers then
        host.log.warn("push ", msg_id, " to ", #remote, " users elsewhere: ", tostring(err))
        return here, 0
    end
    local by, names = {}, {}
    for i, uid in ipairs(remote) do
        local name = servers[i]
        if name and name ~= settings.name then
            if not by[name] then
                by[name] = {}
                names[#names + 1] = name
            end
            local list = by[name]
            list[#list + 1] = uid
        end
    end
    for _, name in ipairs(names) do push.post_many(session, name, by[name], msg_id, body) end
    return here, #names
end

return M

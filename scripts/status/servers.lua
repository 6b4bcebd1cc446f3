-- status.servers: the chat servers that are alive now, with their load. A chat server is
-- known from config (chat.instances) or from the set `chatservers`; it is alive while its
-- liveness key chatserver_<name> (written with a TTL by the chat server itself) exists.
local host = require "host"
local keys = require "lib.keys"

local M = {}

-- Config does not change while the process runs: read the configured names once per
-- generation of this module.
local CONFIGURED = {}
do
    local chat = host.config_copy().chat
    for name in pairs(chat and chat.instances or {}) do CONFIGURED[#CONFIGURED + 1] = name end
    table.sort(CONFIGURED)
end

local function decode_alive(names, res, first, loads)
    local alive = {}
    for i, n in ipairs(names) do
        local info = res[first + i - 1]
        if type(info) == "string" then
            local d = host.json.safe.decode(info)
            if type(d) == "table" and d.host and d.port then
                local load = tonumber(type(loads) == "table" and loads[i]) or 0
                alive[#alive + 1] = { name = n, host = d.host, port = tostring(d.port), load = load }
            end
        end
    end
    return alive
end

-- One pipeline: liveness and load of the given names, the tie counter, the announced
-- names, and the caller's extra command (so a call costs one Redis round trip).
local function query(names, extra)
    local cmds = { { "INCR", keys.STATUS_ROUND_ROBIN }, { "SMEMBERS", keys.CHAT_SERVERS } }
    local hmget = { "HMGET", keys.LOGIN_COUNT }
    for _, n in ipairs(names) do
        cmds[#cmds + 1] = { "GET", keys.chat_server(n) }
        hmget[#hmget + 1] = n
    end
    if #names > 0 then cmds[#cmds + 1] = hmget end
    if extra then cmds[#cmds + 1] = extra end
    return host.redis.pipeline(cmds)
end

-- live(extra?) -> alive, tie, extra_reply | nil, err
-- alive: array of {name, host, port, load} sorted by name; tie: a counter for tie-breaks;
-- extra: an optional command sent in the same round trip, whose reply comes third.
function M.live(extra)
    local res, err = query(CONFIGURED, extra)
    if not res then return nil, err end
    local extra_reply = extra and res[#res]
    if type(extra_reply) == "table" and extra_reply.err then return nil, extra_reply.err end
    local names, known = CONFIGURED, {}
    for _, n in ipairs(CONFIGURED) do known[n] = true end
    local announced = type(res[2]) == "table" and res[2] or {}
    local unknown = false
    for _, n in ipairs(announced) do unknown = unknown or not known[n] end
    if unknown then -- servers from elsewhere: ask again with the full list (rare)
        names = {}
        for _, n in ipairs(CONFIGURED) do names[#names + 1] = n end
        for _, n in ipairs(announced) do if not known[n] then names[#names + 1] = n end end
        table.sort(names)
        res, err = query(names)
        if not res then return nil, err end
    end
    local loads = #names > 0 and res[2 + #names + 1] or nil
    return decode_alive(names, res, 3, loads), tonumber(res[1]) or 0, extra_reply
end

return M

-- A connection that closes while its login (1005) is binding: the session's on_close may
-- run before the login writes the presence keys (it takes no lock), so the login itself
-- must remove what it wrote for the dead session. Otherwise uip_/usession_ name a session
-- that is gone until presence_ttl_s runs out (docs/protocol.md §6).
local host = require "host"
local util = require "helpers.util"
local chat_client = require "helpers.chat_client"
local cluster = require "helpers.chat_cluster"
local redis = host.redis

local SLOW_MS = 500

-- Makes chat.presence.set (the login's write of uip_/usession_) start SLOW_MS late.
local function slow_presence(scripts)
    util.edit_file(scripts .. "/chat/presence.lua", "(\nfunction M%.set%(uid, session_id%)\n)",
        "%1    host.timer.sleep(" .. SLOW_MS .. ")\n")
end

describe("chat login of a connection that closes meanwhile", function()
    local chat

    setup(function()
        chat = cluster.start_chat { copy_scripts = true, edit = slow_presence }
    end)

    teardown(function() chat:stop() end)

    it("leaves no presence keys behind", function()
        local u = cluster.user()
        local c = assert(chat_client.connect(chat.port))
        assert(c:send(1005, { uid = u.uid, token = u.token }))
        host.timer.sleep(100) -- the login is waiting in presence.set now
        c:close()
        assert(chat:await("bind of uid " .. u.uid .. " failed: closed", 5000))
        assert.is_nil(redis.call("GET", "usession_" .. u.uid))
        assert.is_nil(redis.call("GET", "uip_" .. u.uid))
    end)
end)

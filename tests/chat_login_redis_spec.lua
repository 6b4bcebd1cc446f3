-- A chat login while the chat server's Redis is down (docs/protocol.md §6): nothing of the
-- login has happened yet when its token cannot be read, so the answer is 1018 (busy, safe
-- to retry: the client tries again with a new login), not 1019.
local host = require "host"
local rs = require "helpers.redis_server"
local cluster = require "helpers.chat_cluster"
local chat_client = require "helpers.chat_client"

describe("chat login without Redis", function()
    timeout(30000)

    it("answers 1018 when the token cannot be read", function()
        local srv = rs.start {}
        local r = host.redis.new { host = "127.0.0.1", port = srv.port, pool_size = 1 }
        local chat = cluster.start_chat { env = { CHATHOST_REDIS_PORT = tostring(srv.port) },
            redis = r }
        local u = cluster.user()
        r:close()
        srv:stop()
        local c = assert(chat_client.connect(chat.port))
        assert.same({ error = 1018 }, c:request(1005, { uid = u.uid, token = u.token }, 10000))
        c:close()
        chat:stop()
    end)
end)

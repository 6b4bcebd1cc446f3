-- A text message (1017) whose group commit outlasts the chat role's wait for it
-- (chat.batch: mysql.acquire_timeout_ms + 2 * mysql.write_timeout_s) may still be
-- committed afterwards. Its outcome is unknown, so it is answered 1019, never 1018: 1018
-- means "safe to retry" (docs/protocol.md §2), and the retry would store it twice.
local host = require "host"
local util = require "helpers.util"
local cluster = require "helpers.chat_cluster"

-- The wait is 500 + 2 * 1000 = 2500 ms with these settings; every insert takes longer.
local MYSQL = { acquire_timeout_ms = 500, write_timeout_s = 1 }
local SLOW_MS = 3500

-- Makes lib.messages' inserts (one multi-row INSERT, checked or not, or one per row) start
-- SLOW_MS late.
local function slow_inserts(scripts)
    util.edit_file(scripts .. "/lib/messages.lua", "(\nfunction M%.insert_%a+%(rows[^)]*%)\n)",
        "%1    host.timer.sleep(" .. SLOW_MS .. ")\n", 3) -- insert_multi, _checked and _each
end

describe("chat text stored after the wait for it ended", function()
    local chat

    setup(function()
        chat = cluster.start_chat { copy_scripts = true, edit = slow_inserts,
            config = { mysql = MYSQL } }
    end)

    teardown(function() chat:stop() end)

    it("answers 1019, not the retryable 1018, and the message is stored once", function()
        local a, b = cluster.user(), cluster.user()
        local thread = cluster.befriend(a, b)
        local ca = cluster.login(chat.port, a)
        local content = "maybe stored " .. host.crypto.random_hex(4)
        local r = assert(ca:request(1017, { fromuid = a.uid, touid = b.uid, thread_id = thread,
            text_array = { { content = content, unique_id = "{late-1}" } } }, 8000))
        assert.same({ error = 1019, fromuid = a.uid, touid = b.uid, thread_id = thread }, r)
        -- the flush went on and committed: a retry would have been a second copy
        local sql = "SELECT COUNT(*) AS n FROM chat_message WHERE thread_id = ? AND content = ?"
        assert(util.wait_until(function() return cluster.count(sql, thread, content) == 1 end,
            3000, "the late commit"))
        ca:close()
    end)
end)

-- chat_ids_spec.lua: message ids as a 3-node Galera cluster hands them out (issue 16).
-- tools/test.sh starts MariaDB with auto_increment_increment = 3 and offset 2, so every
-- spec runs on ids that are not consecutive numbers; this one checks that the setting is
-- in force and that the group commit's multi-row INSERT (still used: ids step apart) (several sessions' messages in one
-- statement) acknowledges each message with its own row's id, and that history pages and
-- "newer than" cursors are exact over such ids.
local host = require "host"
local cluster = require "helpers.chat_cluster"
local db = host.db

local function inserts()
    return tonumber(assert(db.query("SHOW GLOBAL STATUS LIKE 'Com_insert'"))[1].Value)
end

local function stored(id)
    return assert(db.query("SELECT sender_id, content FROM chat_message WHERE message_id = ?", id))[1]
end

describe("chat on interleaved AUTO_INCREMENT", function()
    local cl, chat

    setup(function()
        -- a window long enough for both senders' requests to share a batch
        cl = cluster.start { chats = 1, chat = { batch_window_ms = 50, page_size = 4 } }
        chat = cl.chats[1]
    end)
    teardown(function() cl:stop() end)

    it("runs on a server that hands out every third id, from the second", function()
        local rows = assert(db.query(
            "SELECT @@auto_increment_increment AS inc, @@auto_increment_offset AS off"))
        assert.same({ inc = 3, off = 2 }, rows[1])
    end)

    it("acks each message of a group commit with its own row's id, and pages exactly",
        function()
            local a, b = cluster.user(), cluster.user()
            local thread = cluster.befriend(a, b)
            local ca, cb = cluster.login(chat.port, a), cluster.login(chat.port, b)
            local function send(c, from, to, tag)
                local text = {}
                for i = 1, 5 do
                    text[i] = { content = tag .. i, unique_id = tag .. "-" .. i }
                end
                return host.spawn(function()
                    return assert(c:request(1017, { fromuid = from.uid, touid = to.uid,
                        thread_id = thread, text_array = text }))
                end)
            end
            local inserts0 = inserts()
            local ha, hb = send(ca, a, b, "from a "), send(cb, b, a, "from b ")
            local _, acka = ha:wait()
            local _, ackb = hb:wait()
            -- multi-row INSERTs (one per batch), not one per message: the ids of one are
            -- known from the first one's and the step
            assert.truthy(inserts() - inserts0 <= 2, inserts() - inserts0)
            local all = {}
            for _, ack in ipairs({ acka, ackb }) do
                assert.equal(0, ack.error)
                for i, d in ipairs(ack.chat_datas) do
                    assert.same({ sender_id = ack.fromuid, content = d.content },
                        stored(d.message_id))
                    -- one request's rows are one INSERT's: AUTO_INCREMENT's step apart
                    if i > 1 then
                        assert.equal(3, d.message_id - ack.chat_datas[i - 1].message_id)
                    end
                    assert.equal(2, d.message_id % 3)
                    all[#all + 1] = d
                end
            end
            table.sort(all, function(x, y) return x.message_id < y.message_id end)
            -- pages of 4 by "newer than" cursor: each message once, in id order
            local cursor, got = 0, {}
            repeat
                local r = assert(ca:request(1029, { thread_id = thread, message_id = cursor }))
                assert.equal(0, r.error)
                for _, d in ipairs(r.chat_datas) do
                    assert.truthy(d.msg_id > cursor)
                    got[#got + 1] = d
                end
                cursor = r.last_message_id
            until not r.load_more
            assert.equal(#all, #got)
            for i, d in ipairs(got) do
                assert.same({ all[i].message_id, all[i].content }, { d.msg_id, d.msg_content })
            end
            ca:close()
            cb:close()
        end)
end)

-- lib.messages.insert_checked, what the group commit uses under innodb_autoinc_lock_mode 2
-- (Galera), run here directly on make test's MariaDB; edit changes its source first.
describe("lib.messages.insert_checked", function()
    local function load_messages(edit)
        package.loaded["lib.sql"] = package.loaded["lib.sql"]
            or dofile(host.root .. "/scripts/lib/sql.lua")
        local src = assert(host.fs.read(host.root .. "/scripts/lib/messages.lua"))
        if edit then src = edit(src) end
        return assert(loadstring(src, "=messages.lua"))()
    end

    local function rows_of(thread, n)
        local rows = {}
        for i = 1, n do
            rows[i] = { thread_id = thread, sender_id = 7, recv_id = 8, content = "checked " .. i,
                unique_id = i % 2 == 0 and host.crypto.random_hex(8) or nil,
                created_at = "2026-12-07 06:00:00", status = 2 }
        end
        return rows
    end

    local function stored_in(thread)
        return assert(db.query("SELECT message_id, content FROM chat_message WHERE thread_id = ?"
            .. " ORDER BY message_id", thread))
    end

    it("stores the rows in one INSERT and returns each row's own id", function()
        local messages = load_messages()
        local thread = 900000000 + host.crypto.random_uniform(1000000)
        local inserts0 = inserts()
        local ids = assert(messages.insert_checked(rows_of(thread, 5)))
        assert.equal(1, inserts() - inserts0)
        local rows = stored_in(thread)
        assert.equal(5, #rows)
        for i, r in ipairs(rows) do
            assert.same({ ids[i], "checked " .. i }, { r.message_id, r.content })
        end
    end)

    it("stores nothing and answers false when the ids it reads back are not its rows",
        function()
            -- a wrong step stands for ids interleaved with another statement's
            local messages = load_messages(function(src)
                local out, n = src:gsub("SELECT @@auto_increment_increment AS step",
                    "SELECT @@auto_increment_increment + 1 AS step")
                assert.equal(1, n)
                return out
            end)
            local thread = 900000000 + host.crypto.random_uniform(1000000)
            assert.is_false(messages.insert_checked(rows_of(thread, 3)))
            assert.same({}, stored_in(thread))
        end)
end)

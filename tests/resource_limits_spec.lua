-- The resource role's limits (docs/protocol.md §13.7) at their boundaries: the file size
-- (resource.max_file_bytes), the types taken by content (resource.image_types), the quota
-- per user (resource.quota_bytes, resource.max_uploads), the expiry of unfinished uploads
-- (resource.upload_ttl_s), and a disk that says no (1105, nothing marked complete).
local host = require "host"
local util = require "helpers.util"
local res = require "helpers.res_client"
local rc = require "helpers.res_cluster"
local roles = require "helpers.roles"
local http = require "helpers.http"

local session_user = rc.session_user

-- upload(role, a, b, data, name?) -> the last ack of the image's upload from a to b
local function upload(role, a, b, data, name)
    name = name or rc.name()
    local id = rc.image_message(a, b, 1, name)
    local c = assert(res.connect(role.port))
    local last = res.upload_image(c, { uid = a.uid, token = a.token, name = name, data = data,
        message_id = id, receiver = b.uid })
    c:close()
    return last, name
end

describe("resource limits", function()
    timeout(30000)
    local role

    setup(function()
        role = rc.start { resource = { max_file_bytes = 65536, quota_bytes = 150000,
            max_uploads = 2, image_types = { "png", "gif" } } }
    end)
    teardown(function() role:stop() end)

    it("takes a file of max_file_bytes exactly and refuses one byte more (1101)", function()
        local a, b = session_user(), session_user()
        local ok, name = upload(role, a, b, res.png(65536))
        assert.equal(0, ok.error)
        assert.equal(1, rc.upload_row(name).state)
        local r, big = upload(role, a, b, res.png(65537))
        assert.equal(1101, r.error)
        assert.equal("total_size", r.field)
        assert.is_nil(rc.upload_row(big))
    end)

    it("tells images by their content: a text named .png, a JPEG when only png and gif are taken (1102)", function()
        local a, b = session_user(), session_user()
        local r = upload(role, a, b, ("not an image at all "):rep(100))
        assert.equal(1102, r.error)
        r = upload(role, a, b, "\255\216\255\224" .. res.png(5000):sub(5), rc.name("jpg"))
        assert.equal(1102, r.error)
        local gif, name = upload(role, a, b, "GIF89a" .. res.png(40000):sub(7), rc.name("gif"))
        assert.equal(0, gif.error)
        assert.equal(1, rc.upload_row(name).state)
    end)

    it("keeps a user within quota_bytes: up to it exactly, then 1103", function()
        local a, b = session_user(), session_user()
        assert.equal(0, (upload(role, a, b, res.png(65536))).error)
        assert.equal(0, (upload(role, a, b, res.png(65536))).error)
        local rest = 150000 - 2 * 65536
        local over, name = upload(role, a, b, res.png(rest + 1))
        assert.equal(1103, over.error)
        assert.equal("total_size", over.field)
        -- nothing of the refused first chunk stays, its row's INSERT (made while the quota
        -- was checked) included: its name is taken at once
        assert.is_nil(rc.upload_row(name))
        assert.equal(0, (upload(role, a, b, res.png(rest), name)).error)
        assert.equal(1, rc.upload_row(name).state)
        -- others are not counted against a
        assert.equal(0, (upload(role, b, a, res.png(1000))).error)
    end)

    it("allows max_uploads unfinished uploads per user at once, then 1103", function()
        local a, b = session_user(), session_user()
        local c = assert(res.connect(role.port))
        for i = 1, 3 do
            local name = rc.name()
            local r = assert(c:request(1041, res.image_body(1041, { uid = a.uid, token = a.token,
                name = name, message_id = rc.image_message(a, b, 1, name), receiver = b.uid,
                data = res.png(40000) }, 1)))
            if i <= 2 then
                assert.equal(0, r.error)
            else
                assert.equal(1103, r.error)
                assert.equal("uploads", r.field)
            end
        end
        c:close()
    end)
end)

describe("resource database connections held open", function()
    timeout(30000)

    -- A new upload's row is inserted in a transaction that waits for its checks (their own
    -- queries, submitted before it: a transaction begun first could hold every connection
    -- the checks need; at most mysql.pool_size - 2 such transactions are held at once).
    it("answers every first chunk when more arrive at once than the pool has connections", function()
        local role = rc.start { mysql = { pool_size = 3 } }
        local conns, ups = {}, {}
        for i = 1, 6 do
            local _, _, u = rc.image_upload(40000)
            ups[i], conns[i] = u, assert(res.connect(role.port))
        end
        for i = 1, 6 do assert(conns[i]:send(1041, res.image_body(1041, ups[i], 1))) end
        for i = 1, 6 do
            local id, r = conns[i]:read_frame(10000)
            assert.equal(1042, id, r)
            assert.equal(0, r.error)
            assert.equal(0, rc.upload_row(ups[i].name).state)
            conns[i]:close()
        end
        role:stop()
    end)
end)

describe("resource expiry", function()
    timeout(30000)

    it("marks an upload without chunks for upload_ttl_s failed, removes its partial file, and a new first chunk starts it again", function()
        local role = rc.start { resource = { upload_ttl_s = 1, sweep_interval_ms = 50 } }
        local _, _, u = rc.image_upload(3 * 32768)
        local name = u.name
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        local row = rc.upload_row(name)
        local partial = role.files .. "/partial/" .. row.upload_id
        assert.equal("file", host.fs.kind(partial))
        assert(util.wait_until(function() return rc.upload_row(name).state == 2 end, 10000,
            "the upload to expire"))
        assert(util.wait_until(function() return host.fs.kind(partial) == nil end, 2000,
            "the partial file to go"))
        local late = assert(c:request(1037, res.image_body(1037, u, 2)))
        assert.equal(1100, late.error)
        assert.equal(0, res.upload_image(c, u).error)
        assert.equal(1, rc.upload_row(name).state)
        c:close()
        role:stop()
    end)
end)

describe("resource pool_threads and write_threads", function()
    timeout(30000)

    -- the threads of a role's process after an upload (its pool and writers started),
    -- with these resource settings
    local function threads_after_upload(settings)
        local role = rc.start { resource = settings }
        local _, _, u = rc.image_upload(3 * 32768, true)
        local c = assert(res.connect(role.port))
        assert.equal(0, res.upload_image(c, u).error)
        c:close()
        local n = #assert(host.fs.list("/proc/" .. role.proc.pid .. "/task"))
        role:stop()
        return n
    end

    it("gives the process's pool that many threads (not the spec harness's own size)", function()
        assert.equal(3, threads_after_upload { pool_threads = 4 } - threads_after_upload { pool_threads = 1 })
    end)

    it("gives the process that many writer threads, apart from the pool", function()
        assert.equal(2, threads_after_upload { write_threads = 3 } - threads_after_upload { write_threads = 1 })
    end)

    it("lets a writer out of work spin write_spin_us at most, then sleep", function()
        -- the CPU time of all the process's threads (schedstat: ns) -> ms
        local function run_ms(pid)
            local ns = 0
            for _, tid in ipairs(assert(host.fs.list("/proc/" .. pid .. "/task"))) do
                local st = host.fs.read("/proc/" .. pid .. "/task/" .. tid .. "/schedstat")
                ns = ns + (tonumber(st and st:match("^(%d+)")) or 0)
            end
            return ns / 1e6
        end
        local role = rc.start { resource = { write_spin_us = 10000, sweep_interval_ms = 60000 } }
        local _, _, u = rc.image_upload(3 * 32768, true)
        local c = assert(res.connect(role.port))
        assert.equal(0, res.upload_image(c, u).error)
        c:close()
        host.timer.sleep(100) -- (its last jobs done, the writer's 10 ms of spinning over)
        local before = run_ms(role.proc.pid)
        host.timer.sleep(400)
        local idle = run_ms(role.proc.pid) - before
        role:stop()
        assert.is_true(idle < 100, ("the process ran %.1f ms of 400 idle"):format(idle))
    end)

    it("uploads and downloads with one pool thread and one writer (the boundary), several connections at once", function()
        local role = rc.start { resource = { pool_threads = 1, write_threads = 1 } }
        local tasks, uploads = {}, {}
        for i = 1, 3 do
            local a, b, u = rc.image_upload(5 * 32768 + i, true)
            uploads[i] = { a = a, b = b, u = u }
            tasks[i] = host.spawn(function()
                local c = assert(res.connect(role.port))
                local r = res.upload_image(c, u)
                c:close()
                return r.error
            end)
        end
        for i = 1, 3 do assert.same({ true, 0 }, { tasks[i]:wait(20000) }) end
        for i = 1, 3 do
            local x = uploads[i]
            local c = assert(res.connect(role.port))
            local got = assert(res.download_image(c, x.b, { name = x.u.name, message_id = x.u.message_id,
                sender_id = x.a.uid, receiver_id = x.b.uid }))
            assert.equal(x.u.data, got)
            c:close()
        end
        role:stop()
    end)
end)

describe("resource expiry by the partial's writes", function()
    timeout(30000)

    it("keeps an upload whose row is older than upload_ttl_s while its partial was written within it, then expires it", function()
        local role = rc.start { resource = { upload_ttl_s = 60, sweep_interval_ms = 50 } }
        local _, _, u = rc.image_upload(3 * 32768)
        local name = u.name
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, u, 1))).error)
        c:close()
        local id = rc.upload_row(name).upload_id
        local partial = role.files .. "/partial/" .. id
        local function age_row()
            assert(host.db.exec("UPDATE upload SET updated_at = NOW() - INTERVAL 120 SECOND WHERE upload_id = ?", id))
        end
        local function row_age()
            return assert(host.db.query("SELECT TIMESTAMPDIFF(SECOND, updated_at, NOW()) AS age "
                .. "FROM upload WHERE upload_id = ?", id))[1].age
        end
        age_row() -- the partial was written just now: the sweeper touches the row, keeps it
        assert(util.wait_until(function() return row_age() < 60 end, 5000, "the row touched"))
        assert.equal(0, rc.upload_row(name).state)
        assert.equal("file", host.fs.kind(partial))
        -- its last write two minutes ago: expired, the partial removed
        assert(host.proc.run({ "touch", "-d", "-2 minutes", partial }))
        age_row()
        assert(util.wait_until(function() return rc.upload_row(name).state == 2 end, 5000,
            "the upload to expire"))
        assert(util.wait_until(function() return host.fs.kind(partial) == nil end, 2000,
            "the partial file to go"))
        role:stop()
    end)
end)

describe("resource storage failures", function()
    timeout(30000)

    it("answers 1105 when the storage folder cannot be made (a path under a regular file) and marks nothing complete", function()
        local dir = assert(host.fs.mkdtemp("resbad"))
        assert(host.fs.write(dir .. "/plain", "a regular file"))
        local admin = roles.free_port()
        local role = rc.start { dir = dir .. "/plain/files", resource = { admin_port = admin } }
        local a, b = session_user(), session_user()
        local r, name = upload(role, a, b, res.png(1000))
        assert.equal(1105, r.error)
        local row = rc.upload_row(name)
        assert.equal(0, row.state)
        assert.is_nil(row.hash)
        assert.truthy(role:log():find("storage folder", 1, true))
        local health = assert(http.get(admin, "/healthz"))
        assert.equal(503, health.status)
        assert.matches("^failing: ", host.json.decode(health.body).checks.storage)
        role:stop()
        host.fs.rmtree(dir)
    end)

    it("answers 1105 on a full disk (a 64 KiB tmpfs) and never marks the half file complete", function()
        local dir = assert(host.fs.mkdtemp("resfull"))
        local m = host.proc.run({ "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir })
        if m.code ~= 0 then
            io.stderr:write("SKIPPED: tmpfs cannot be mounted here (", m.stderr, ")\n")
            host.fs.rmtree(dir)
            return
        end
        local role = rc.start { dir = dir .. "/files" }
        local a, b = session_user(), session_user()
        local r, name = upload(role, a, b, res.png(5 * 32768))
        assert.equal(1105, r.error)
        local row = rc.upload_row(name)
        assert.equal(0, row.state)
        assert.is_nil(row.hash)
        assert.truthy(role:log():find("ENOSPC", 1, true) or role:log():find("No space", 1, true))
        role:stop()
        host.proc.run({ "umount", dir })
        host.fs.rmtree(dir)
    end)
end)

-- The resource role's avatars (docs/protocol.md §13.4-13.5): 1031 stop-and-wait upload
-- with every field echoed as the client needs it, the user's icon set at completion, 1033
-- download by any logged-in user (name, client_path, req_type echoed, is_last a boolean),
-- never before the upload is complete, never under another user's name.
local host = require "host"
local res = require "helpers.res_client"
local rc = require "helpers.res_cluster"
local util = require "helpers.util"

local session_user = rc.session_user

describe("resource avatars", function()
    timeout(30000)
    local role

    setup(function() role = rc.start() end)
    teardown(function() role:stop() end)

    it("uploads stop-and-wait, echoes every field, sets the icon; another user downloads it", function()
        local a, b = session_user(), session_user()
        local name = rc.name()
        local data = res.png(2 * 32768 + 100)
        local c = assert(res.connect(role.port))
        local first = assert(c:request(1031, { md5 = "0123456789abcdef0123456789abcdef",
            name = name, seq = 1, trans_size = 32768, total_size = #data, token = a.token,
            uid = a.uid, last = 0, data = host.crypto.base64_encode(data:sub(1, 32768)),
            last_seq = 3 }))
        assert.same({ error = 0, md5 = "0123456789abcdef0123456789abcdef", seq = 1,
            trans_size = 32768, uid = a.uid, total_size = #data, name = name, last_seq = 3,
            last = 0 }, first)
        -- a 1033 for it while the upload runs (the client sends one after chunk 1)
        local early = assert(c:request(1033, { name = name, seq = 1, uid = a.uid,
            client_path = "/x/" .. name, req_type = "self_icon" }))
        assert.equal(1107, early.error)
        assert.equal("/x/" .. name, early.client_path)
        assert.equal("self_icon", early.req_type)
        local last = res.upload_avatar(c, { uid = a.uid, token = a.token, name = name, data = data })
        assert.equal(0, last.error)
        assert.equal(#data, last.trans_size)
        assert.equal(1, rc.upload_row(name, 1).state)
        -- the icon follows the reply (the announcement is a task of its own)
        assert(util.wait_until(function()
            return host.db.query("SELECT icon FROM user WHERE uid = ?", a.uid)[1].icon == name
        end, 5000, "the icon"))
        local cb = assert(res.connect(role.port))
        local got, r = res.download_avatar(cb, b, name)
        assert.equal(data, got)
        assert.equal(name, r.name)
        assert.equal("/tmp/x/" .. name, r.client_path)
        assert.equal("other_icon", r.req_type)
        assert.equal(tostring(#data), r.total_size)
        assert.equal(tostring(#data), r.current_size)
        c:close()
        cb:close()
    end)

    it("refuses another user's avatar name (1108), an unknown one (1100) and a download without a session (1014)", function()
        local a, b = session_user(), session_user()
        local name = rc.name()
        local c = assert(res.connect(role.port))
        assert.equal(0, res.upload_avatar(c, { uid = a.uid, token = a.token, name = name,
            data = res.png(500) }).error)
        local cb = assert(res.connect(role.port))
        local r = res.upload_avatar(cb, { uid = b.uid, token = b.token, name = name,
            data = res.png(700) })
        assert.equal(1108, r.error)
        assert.equal(name, r.name)
        local _, none = res.download_avatar(cb, b, rc.name())
        assert.equal(1100, none.error)
        local anon = assert(res.connect(role.port))
        local r2 = assert(anon:request(1033, { name = name, seq = 1, uid = b.uid }))
        assert.equal(1014, r2.error)
        local c3 = assert(res.connect(role.port))
        local r3 = assert(c3:request(1033, { name = name, seq = 1, uid = b.uid, token = "nope" }))
        assert.equal(1010, r3.error)
        for _, x in ipairs({ c, cb, anon, c3 }) do x:close() end
    end)

    it("answers a chunk past the end (1104) and a later chunk of an upload never begun (1100)", function()
        local a = session_user()
        local name = rc.name()
        local c = assert(res.connect(role.port))
        local data = res.png(40000)
        local r = assert(c:request(1031, { name = name, seq = 2, trans_size = 40000, total_size = 40000,
            token = a.token, uid = a.uid, data = host.crypto.base64_encode(data:sub(32769)) }))
        assert.equal(1100, r.error)
        assert.equal(0, res.upload_avatar(c, { uid = a.uid, token = a.token, name = name,
            data = data }).error)
        local past = assert(c:request(1033, { name = name, seq = 3, uid = a.uid }))
        assert.equal(1104, past.error)
        assert.equal("seq", past.field)
        c:close()
    end)
end)

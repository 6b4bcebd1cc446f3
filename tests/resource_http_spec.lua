-- The resource role's plain HTTP downloads (docs/protocol.md §13.8): GET /files/<id> and
-- /avatars/<name> with a lib.signed_url signature; a stranger without a link, a tampered or
-- an expired one are refused (403), an incomplete upload is 404, Range gives 206/416; the
-- routes count as one route each in /metrics, whatever the file.
local host = require "host"
local http = require "helpers.http"
local res = require "helpers.res_client"
local rc = require "helpers.res_cluster"
local signed_url = require "helpers.scripts_lib" "lib.signed_url"
local roles = require "helpers.roles"

local session_user = rc.session_user

describe("resource HTTP downloads", function()
    timeout(30000)
    local role, a, b, id, name, data, admin_port

    setup(function()
        admin_port = roles.free_port()
        role = rc.start { resource = { admin_port = admin_port } }
        a, b = session_user(), session_user()
        name = rc.name()
        id = rc.image_message(a, b, 1, name)
        data = res.png(100000)
        local c = assert(res.connect(role.port))
        assert.equal(0, res.upload_image(c, { uid = a.uid, token = a.token, name = name,
            data = data, message_id = id, receiver = b.uid }).error)
        c:close()
    end)
    teardown(function() role:stop() end)

    it("serves a signed /files link whole and by Range, with the image's type", function()
        local path = assert(signed_url.sign("/files/" .. id, 300))
        local h = http.connect(role.http_port)
        local r = assert(h:request("GET", path))
        assert.equal(200, r.status)
        assert.equal("image/png", r.headers["content-type"])
        assert.equal(data, r.body)
        local part = assert(h:request("GET", path, nil, { Range = "bytes=1000-1999" }))
        assert.equal(206, part.status)
        assert.equal("bytes 1000-1999/" .. #data, part.headers["content-range"])
        assert.equal(data:sub(1001, 2000), part.body)
        local tail = assert(h:request("GET", path, nil, { Range = "bytes=99990-" }))
        assert.equal(data:sub(99991), tail.body)
        local none = assert(h:request("GET", path, nil, { Range = "bytes=100000-" }))
        assert.equal(416, none.status)
        h:close()
    end)

    it("refuses no signature, a tampered one, another file's and an expired one (403)", function()
        local h = http.connect(role.http_port)
        assert.equal(403, assert(h:request("GET", "/files/" .. id)).status)
        local good = assert(signed_url.sign("/files/" .. id, 300))
        local tampered = good:gsub("s=(%x)", function(c) return "s=" .. (c == "0" and "1" or "0") end)
        local r = assert(h:request("GET", tampered))
        assert.equal(403, r.status)
        assert.equal("bad signature", host.json.decode(r.body).reason)
        local other = good:gsub("^/files/%d+", "/files/" .. (id + 1))
        assert.equal(403, assert(h:request("GET", other)).status)
        local old = assert(signed_url.sign("/files/" .. id, 300, os.time() - 400))
        local ex = assert(h:request("GET", old))
        assert.equal(403, ex.status)
        assert.equal("expired", host.json.decode(ex.body).reason)
        h:close()
    end)

    it("answers 404 for an unknown file and for an upload not complete yet", function()
        local h = http.connect(role.http_port)
        assert.equal(404, assert(h:request("GET", (assert(signed_url.sign("/files/999999999", 300))))).status)
        local n2 = rc.name()
        local id2 = rc.image_message(a, b, 1, n2)
        local c = assert(res.connect(role.port))
        assert.equal(0, assert(c:request(1041, res.image_body(1041, { uid = a.uid, token = a.token,
            name = n2, message_id = id2, receiver = b.uid, data = res.png(40000) }, 1))).error)
        c:close()
        local r = assert(h:request("GET", (assert(signed_url.sign("/files/" .. id2, 300)))))
        assert.equal(404, r.status)
        assert.equal(1107, host.json.decode(r.body).error)
        h:close()
    end)

    it("serves a signed /avatars link", function()
        local avatar = rc.name()
        local c = assert(res.connect(role.port))
        local img = res.png(5000)
        assert.equal(0, res.upload_avatar(c, { uid = a.uid, token = a.token, name = avatar,
            data = img }).error)
        c:close()
        local h = http.connect(role.http_port)
        local r = assert(h:request("GET", (assert(signed_url.sign("/avatars/" .. avatar, 300)))))
        assert.equal(200, r.status)
        assert.equal(img, r.body)
        assert.equal(403, assert(h:request("GET", "/avatars/" .. avatar)).status)
        h:close()
    end)

    it("times each completion's file and rows in /metrics", function()
        local m = assert(http.get(admin_port, "/metrics"))
        for _, phase in ipairs({ "file", "rows" }) do
            local n = m.body:match('chathost_resource_completion_seconds_count{phase="' .. phase
                .. '"} (%d+)')
            assert.truthy(tonumber(n) and tonumber(n) >= 1, phase)
        end
    end)

    it("counts /files/<id> downloads under the one route GET /files/* in /metrics", function()
        local h = http.connect(role.http_port)
        assert.equal(200, assert(h:request("GET", (assert(signed_url.sign("/files/" .. id, 300))))).status)
        h:close()
        local m = assert(http.get(admin_port, "/metrics"))
        assert.truthy(m.body:find('route="GET /files/*",status="200"', 1, true))
        assert.falsy(m.body:find('route="GET /files/' .. id, 1, true))
        local health = assert(http.get(admin_port, "/healthz"))
        assert.equal(200, health.status)
        assert.same({ redis = "ok", mysql = "ok", storage = "ok" }, host.json.decode(health.body).checks)
    end)
end)

-- One client cannot lock everyone out of the gate (issue 10, item 4): connections from one
-- address are capped (gate.max_connections_per_ip, trusted proxies spared) and a new
-- connection that sends nothing is closed after gate.first_byte_timeout_ms, while a
-- keep-alive connection that was served keeps gate.idle_timeout_ms.
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"

local function gate_with(extra)
    return roles.start { role = "gate", ready = "HTTP listening", config = function(port)
        local gate = { host = "0.0.0.0", port = port, admin_port = 0 }
        for k, v in pairs(extra) do gate[k] = v end
        return { gate = gate }
    end }
end

local function login_from(port, source)
    local c = http.connect(port, "127.0.0.1", source)
    local res, err = c:post_json("/user_login", { email = "nobody" })
    c:close()
    return res, err
end

describe("gate connections per client address", function()
    local gate
    after_each(function() if gate then assert.equal(0, gate:stop()) gate = nil end end)

    it("answers the connection beyond the cap with 429 and 1017, and serves other addresses", function()
        gate = gate_with { max_connections_per_ip = 3, first_byte_timeout_ms = 10000 }
        local held = {}
        for i = 1, 3 do held[i] = assert(host.tcp.connect("127.0.0.1", gate.port, { bind = "127.0.0.5" })) end
        local res = assert(login_from(gate.port, "127.0.0.5"))
        assert.equal(429, res.status)
        assert.equal(1017, res.json.error)
        -- another address is served while the first one is at its cap
        res = assert(login_from(gate.port, "127.0.0.6"))
        assert.same({ error = 1016, field = "email" }, res.json)
        -- a freed slot is usable again
        held[1]:close()
        assert(require("helpers.util").wait_until(function()
            local r = login_from(gate.port, "127.0.0.5")
            return r and r.status == 200
        end, 5000, "a slot freed for 127.0.0.5"))
        for i = 2, 3 do held[i]:close() end
    end)

    it("spares trusted proxies", function()
        gate = gate_with { max_connections_per_ip = 1, trusted_proxies = { "127.0.0.7" } }
        local held = assert(host.tcp.connect("127.0.0.1", gate.port, { bind = "127.0.0.7" }))
        local res = assert(login_from(gate.port, "127.0.0.7"))
        assert.same({ error = 1016, field = "email" }, res.json)
        held:close()
    end)

    it("closes a new connection that sends nothing after first_byte_timeout_ms", function()
        gate = gate_with { first_byte_timeout_ms = 200, idle_timeout_ms = 60000 }
        local silent = assert(host.tcp.connect("127.0.0.1", gate.port))
        -- closed by the server (the first-byte deadline), not ended by our 5 s read timeout
        local out, err = silent:read_all(5000)
        silent:close()
        assert.is_nil(err)
        assert.equal("", out)
    end)

    it("keeps a served keep-alive connection for idle_timeout_ms, not the first-byte deadline", function()
        gate = gate_with { first_byte_timeout_ms = 100, idle_timeout_ms = 60000 }
        local c = http.connect(gate.port)
        assert.equal(200, assert(c:post_json("/user_login", { email = "nobody" })).status)
        host.timer.sleep(400) -- four first-byte deadlines: a served connection is not cut by them
        local res = assert(c:post_json("/user_login", { email = "nobody" }))
        assert.same({ error = 1016, field = "email" }, res.json)
        c:close()
    end)
end)

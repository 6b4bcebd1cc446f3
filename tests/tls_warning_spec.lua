-- A role whose users' server (HTTP, chat, WebSocket) listens where other hosts can reach it
-- says at start-up that nothing encrypts that traffic (chathost has no TLS of its own yet);
-- on loopback it says nothing of the kind.
local roles = require "helpers.roles"

describe("start-up without TLS", function()
    local WARNING = "WITHOUT TLS"

    it("warns for a gate on an address other hosts reach, naming it", function()
        local gate = roles.start { role = "gate", config = function(port)
            return { gate = { host = "0.0.0.0", port = port, admin_port = 0 } }
        end }
        assert(gate:await(WARNING, 5000), gate:log())
        assert.truthy(gate:log():find("gate: http on 0.0.0.0:" .. gate.port .. " is reachable", 1, true),
            gate:log())
        gate:stop()
    end)

    it("says nothing of it on loopback", function()
        local gate = roles.start { role = "gate", config = function(port)
            return { gate = { port = port, admin_port = 0 } }
        end }
        assert.falsy(gate:log():find(WARNING, 1, true), gate:log())
        gate:stop()
    end)
end)

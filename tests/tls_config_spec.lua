-- The tls_proxy section and the public ports (docs/protocol.md §5.6): without the proxy
-- there are none; with tls_proxy.enabled (or CHATHOST_TLS_PROXY=1) each listener's proxy
-- port is its port + port_offset unless its public port is set, the proxy's origin is
-- allowed for WebSockets and a local proxy trusted by a loopback gate. The proxy's ports
-- are checked like every other, and the offset at its bounds.
local host = require "host"
local util = require "helpers.util"

describe("config of the TLS proxy", function()
    local dir

    setup(function() dir = assert(host.fs.mkdtemp("tlsconfig")) end)
    teardown(function() host.fs.rmtree(dir) end)

    -- config(text, keys, env?) -> the result of `chathost config KEYS... -c <text's file>`
    local function config(text, keys, env)
        local path = dir .. "/config.lua"
        assert(host.fs.write(path, text))
        local argv = { "config" }
        for _, k in ipairs(keys) do argv[#argv + 1] = k end
        argv[#argv + 1] = "-c"
        argv[#argv + 1] = path
        -- the addresses `make test` exports would override the file: unset them
        local e = { CHATHOST_REDIS_PORT = false, CHATHOST_MYSQL_PORT = false, CHATHOST_TLS_PROXY = false }
        for k, v in pairs(env or {}) do e[k] = v end
        return util.chathost(argv, { env = e })
    end

    local INSTANCES = 'chat = { instances = { chat1 = { port = 8090, rpc_port = 50055, ws_port = 8096 } } }'

    local function values(r)
        assert.equal(0, r.code, r.stderr)
        local out = {}
        for line in r.stdout:gmatch("[^\n]+") do out[#out + 1] = line end
        return out
    end

    local function refused(r, pattern)
        assert.equal(2, r.code)
        assert.matches("^chathost: [^\n]*" .. pattern .. "[^\n]*\n$", r.stderr)
    end

    it("has no proxy ports and trusts no proxy without tls_proxy.enabled", function()
        assert.same({ "gate.trusted_proxies = {}", "chat.ws_origins.1 = http://127.0.0.1:8080",
            "chat.ws_origins.2 = http://localhost:8080" },
            values(config("return { " .. INSTANCES .. " }", { "gate.trusted_proxies", "chat.ws_origins" })))
        for _, key in ipairs({ "tls_proxy.gate_port", "chat.instances.chat1.public_port",
            "chat.instances.chat1.public_ws_port", "resource.public_port", "resource.public_http_port" }) do
            local r = config("return { " .. INSTANCES .. " }", { key })
            assert.equal(2, r.code)
            assert.equal("chathost config: " .. key .. ": not a value\n", r.stderr)
        end
    end)

    it("tells them the proxy's with tls_proxy.enabled: port + port_offset, or as set", function()
        local keys = { "chat.instances.chat1.public_port", "chat.instances.chat1.public_ws_port",
            "resource.public_port", "resource.public_http_port", "tls_proxy.gate_port",
            "tls_proxy.public_host", "gate.trusted_proxies", "chat.ws_origins" }
        local want = { "18090", "18096", "18093", "18094", "18080", "127.0.0.1",
            "gate.trusted_proxies.1 = 127.0.0.1",
            "chat.ws_origins.1 = http://127.0.0.1:8080", "chat.ws_origins.2 = http://localhost:8080",
            "chat.ws_origins.3 = https://127.0.0.1:18080", "chat.ws_origins.4 = https://localhost:18080" }
        assert.same(want, values(config("return { " .. INSTANCES .. ", tls_proxy = { enabled = true } }", keys)))
        -- the same from the environment
        assert.same(want, values(config("return { " .. INSTANCES .. " }", keys, { CHATHOST_TLS_PROXY = "1" })))
        -- set ones win; a named public host is what clients dial; a gate reachable from
        -- elsewhere trusts no proxy by itself
        local r = config([[return { gate = { host = "0.0.0.0" },
            chat = { instances = { chat1 = { port = 8090, rpc_port = 50055, ws_port = 8096,
                public_port = 443, public_ws_port = 8443 } } },
            resource = { public_port = 9443 },
            tls_proxy = { enabled = true, host = "10.0.0.5", public_host = "chat.example",
                gate_port = 4443, port_offset = 100 } }]], keys)
        assert.same({ "443", "8443", "9443", "8194", "4443", "chat.example", "gate.trusted_proxies = {}",
            "chat.ws_origins.1 = http://127.0.0.1:8080", "chat.ws_origins.2 = http://localhost:8080",
            "chat.ws_origins.3 = https://chat.example:4443" }, values(r))
    end)

    it("checks the proxy's ports against the others and port_offset at its bounds", function()
        -- offset 0 on the roles' own host: the proxy would take the gate's port
        refused(config("return { tls_proxy = { enabled = true, port_offset = 0 } }", { "gate.port" }),
            "tls_proxy%.gate_port: 8080 is already used by gate%.port")
        -- ... on another address it may (the roles listen on loopback)
        assert.same({ "8080" }, values(config(
            'return { tls_proxy = { enabled = true, port_offset = 0, host = "10.0.0.5" } }', { "tls_proxy.gate_port" })))
        assert.same({ "65535" }, values(config(
            "return { gate = { port = 5535 }, chat = { instances = {} }, resource = { public_port = 1, "
                .. "public_http_port = 2 }, tls_proxy = { enabled = true, port_offset = 60000 } }",
            { "tls_proxy.gate_port" })))
        refused(config("return { tls_proxy = { enabled = true, port_offset = 60000 } }", { "gate.port" }),
            "tls_proxy%.port_offset: [%w._]+ %d+ %+ 60000 is beyond 65535 %(set its public port%)")
        refused(config("return { tls_proxy = { port_offset = 60001 } }", { "gate.port" }),
            "tls_proxy%.port_offset: 60001 is out of range 0%.%.60000")
    end)

    it("refuses a half certificate and an unclear CHATHOST_TLS_PROXY", function()
        refused(config('return { tls_proxy = { cert_file = "c.pem" } }', { "gate.port" }),
            "tls_proxy: cert_file and key_file go together")
        refused(config("return {}", { "gate.port" }, { CHATHOST_TLS_PROXY = "yes" }),
            "tls_proxy%.enabled: expected 1, 0, true or false, got yes")
    end)
end)

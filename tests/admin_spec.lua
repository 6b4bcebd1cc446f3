-- The admin listener every role runs: /healthz checks the stores the role uses, /metrics
-- is Prometheus text with requests, latency, pools, coroutines and reloads.
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"

local function start(role, extra, env)
    local admin_port
    local r = roles.start { role = role, env = env, config = function(port)
        admin_port = roles.free_port()
        local cfg = { [role] = { port = port, admin_port = admin_port } }
        for k, v in pairs(extra or {}) do cfg[k] = v end
        return cfg
    end }
    r.admin_port = admin_port
    return r
end

describe("admin listener", function()
    it("reports a healthy status role and its metrics", function()
        local status = start("status")
        local res = assert(http.get(status.admin_port, "/healthz"))
        assert.equal(200, res.status)
        local body = host.json.decode(res.body)
        assert.same({ redis = "ok" }, body.checks)
        assert.equal("status", body.role)
        -- a gRPC call, then the metrics
        assert(host.grpc.call("127.0.0.1:" .. status.port, "StatusService.Login", { uid = 1, token = "x" }))
        local m = assert(http.get(status.admin_port, "/metrics"))
        assert.equal(200, m.status)
        assert.matches("^text/plain", m.headers["content-type"])
        assert.matches("\nchathost_coroutines{name=\"status\",role=\"status\"} %d", m.body)
        assert.matches("\nchathost_redis_connected %d", m.body)
        assert.matches("\nchathost_script_generation 1\n", m.body)
        assert.matches("# TYPE chathost_http_requests_total counter", m.body)
        assert.matches('chathost_http_requests_total{server="admin",route="GET /healthz",status="200"} 1', m.body)
        assert.equal(0, status:stop())
    end)

    it("answers 503 naming the failing store when Redis is unreachable", function()
        local status = start("status", { redis = { port = 1, connect_timeout_ms = 200,
            command_timeout_ms = 300 } }, { CHATHOST_REDIS_PORT = false })
        local res = assert(http.get(status.admin_port, "/healthz"))
        assert.equal(503, res.status)
        local body = host.json.decode(res.body)
        assert.equal("failing", body.status)
        assert.matches("^failing: ", body.checks.redis)
        status:stop()
    end)

    it("exits 2 with one line when the admin port is taken", function()
        local blocker = assert(host.http.serve { address = "127.0.0.1:0", routes = {} })
        local dir = assert(host.fs.mkdtemp("admin"))
        assert(host.fs.write(dir .. "/config.lua", "return " .. roles.serialize {
            scripts = { dir = host.root .. "/scripts" },
            status = { port = roles.free_port(), admin_port = blocker.port } }))
        local r = require("helpers.util").chathost({ "status", "-c", dir .. "/config.lua" })
        blocker:close()
        host.fs.rmtree(dir)
        assert.equal(2, r.code)
        assert.matches("chathost: cannot listen on 127%.0%.0%.1:%d+: Address already in use\n$", r.stderr)
    end)
end)

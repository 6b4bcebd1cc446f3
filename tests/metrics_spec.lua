-- /metrics after real traffic (issue 9): gRPC calls served and made by method and status
-- code with their latency, chat messages by msg_id with their handlers' time, gate replies
-- by their JSON error code (every reply is HTTP 200). And the Prometheus conventions on
-- every role's whole text: names start with chathost_, a counter is named *_total and is of
-- TYPE counter (nothing else is), values are written without binary noise.
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"
local cluster = require "helpers.chat_cluster"

local password = dofile(host.root .. "/scripts/lib/password.lua")

local function scrape(port)
    local res = assert(http.get(port, "/metrics"))
    assert.equal(200, res.status)
    return res.body
end

-- The value of the sample written exactly as series ('name{k="v",...}'), or nil.
local function value(text, series)
    for line in text:gmatch("[^\n]+") do
        if line:sub(1, #series + 1) == series .. " " then
            return tonumber(line:sub(#series + 2))
        end
    end
    return nil
end

-- The shortest of %.15g, %.16g, %.17g that reads back as x (integers as integers).
local function shortest(x)
    if x == math.floor(x) and math.abs(x) < 1e15 then return ("%d"):format(x) end
    for digits = 15, 17 do
        local s = ("%." .. digits .. "g"):format(x)
        if tonumber(s) == x then return s end
    end
end

-- Asserts the conventions on a whole exposition; returns {name = type}.
local function assert_conventions(text)
    local types = {}
    for name, kind in text:gmatch("# TYPE (%S+) (%S+)") do
        assert.matches("^chathost_", name)
        if kind == "counter" then
            assert.matches("_total$", name)
        else
            assert.not_matches("_total$", name)
        end
        types[name] = kind
    end
    for line in text:gmatch("[^\n]+") do
        if line:sub(1, 1) ~= "#" then
            local name, v = line:match("^([%w_]+)"), line:match(" (%S+)$")
            assert.truthy(name, line)
            assert.matches("^chathost_", name)
            if v ~= "+Inf" and v ~= "-Inf" and v ~= "NaN" then
                assert.equal(shortest(assert(tonumber(v), line)), v)
            end
        end
    end
    return types
end

-- The text contains s as written (no pattern).
local function has(text, s)
    assert.truthy(text:find(s, 1, true), ("%q not in\n%s"):format(s, text))
end

local function start(role)
    local admin
    local r = roles.start { role = role, config = function(port)
        admin = roles.free_port()
        return { [role] = { port = port, admin_port = admin } }
    end }
    r.admin_port = admin
    return r
end

describe("host.metrics", function()
    it("writes values in the shortest form that reads back the same", function()
        host.metrics.observe("chathost_spec_noise_seconds", 0.028148892)
        host.metrics.set("chathost_spec_noise_gauge", 0.1)
        host.metrics.set_total("chathost_spec_noise_total", 42)
        local text = host.metrics.render()
        assert.equal(0.028148892, value(text, "chathost_spec_noise_seconds_sum"))
        has(text, "\nchathost_spec_noise_seconds_sum 0.028148892\n")
        has(text, "\nchathost_spec_noise_gauge 0.1\n")
        has(text, "\nchathost_spec_noise_total 42\n")
        has(text, 'chathost_spec_noise_seconds_bucket{le="0.05"} 1\n')
        assert_conventions(text)
    end)

    it("makes a counter of inc and set_total, and wants its name to end in _total", function()
        host.metrics.inc("chathost_spec_things_total", 2, { kind = "a" })
        has(host.metrics.render(), "# TYPE chathost_spec_things_total counter\n")
        assert.matches("_total", select(2, pcall(host.metrics.inc, "chathost_spec_things")))
        assert.matches("_total", select(2, pcall(host.metrics.set, "chathost_spec_x_total", 1)))
        assert.matches("never goes down",
            select(2, pcall(host.metrics.inc, "chathost_spec_things_total", -1)))
    end)

    it("keeps one TYPE per name: another kind under a known name is refused", function()
        host.metrics.set("chathost_spec_level", 1, { a = "1" })
        local ok, err = pcall(host.metrics.observe, "chathost_spec_level", 1, { a = "2" })
        assert.is_false(ok)
        assert.matches("chathost_spec_level is a gauge", err)
        assert.not_matches('chathost_spec_level_bucket', host.metrics.render())
    end)
end)

describe("/metrics", function()
    it("counts the status role's gRPC calls by method and code, with their latency", function()
        local status = start("status")
        local target = "127.0.0.1:" .. status.port
        assert(host.grpc.call(target, "StatusService.GetChatServer", { uid = 1 }))
        -- the status role has no ChatService handler: UNIMPLEMENTED
        local _, _, code = host.grpc.call(target, "ChatService.NotifyKickUser", { uid = 1 })
        assert.equal(host.grpc.status.UNIMPLEMENTED, code)
        local text = scrape(status.admin_port)
        local types = assert_conventions(text)
        assert.equal("counter", types.chathost_grpc_server_calls_total)
        assert.equal("histogram", types.chathost_grpc_server_call_seconds)
        assert.equal(1, value(text, 'chathost_grpc_server_calls_total{method='
            .. '"StatusService.GetChatServer",code="OK"}'))
        assert.equal(1, value(text, 'chathost_grpc_server_calls_total{method='
            .. '"ChatService.NotifyKickUser",code="UNIMPLEMENTED"}'))
        assert.equal(1, value(text, 'chathost_grpc_server_call_seconds_count{method='
            .. '"StatusService.GetChatServer"}'))
        assert.equal(1, value(text, 'chathost_grpc_server_call_seconds_bucket{method='
            .. '"StatusService.GetChatServer",le="+Inf"}'))
        assert.equal("counter", types.chathost_coroutines_started_total)
        assert.equal("counter", types.chathost_script_reloads_total)
        assert.equal(0, status:stop())
        -- the calls were made by this process's client: counted on its side too
        local mine = host.metrics.render()
        assert.truthy(value(mine, 'chathost_grpc_client_calls_total{method='
            .. '"StatusService.GetChatServer",code="OK"}') >= 1)
        assert.truthy(value(mine, 'chathost_grpc_client_calls_total{method='
            .. '"ChatService.NotifyKickUser",code="UNIMPLEMENTED"}') >= 1)
        assert.truthy(value(mine, 'chathost_grpc_client_call_seconds_count{method='
            .. '"StatusService.GetChatServer"}') >= 1)
    end)

    it("counts chat messages by msg_id, unknown ones under one label, with handler time", function()
        local cl = cluster.start { chats = 1 }
        local chat = cl.chats[1]
        local u = cluster.user()
        local c = cluster.login(chat.port, u)
        for id = 4000, 4004 do assert(c:send(id, "{}")) end -- no handlers: ignored
        -- frames are handled in order: once this is answered, the ones above were seen
        assert.equal(0, c:request(1023, { fromuid = u.uid }).error)
        c:close()
        local text = scrape(chat.admin_port)
        local types = assert_conventions(text)
        cl:stop()
        assert.equal("counter", types.chathost_chat_messages_total)
        assert.equal("histogram", types.chathost_chat_handler_seconds)
        local server = ('server="%s",'):format(chat.name)
        assert.equal(1, value(text, "chathost_chat_messages_total{" .. server .. 'msg_id="1005"}'))
        assert.equal(1, value(text, "chathost_chat_messages_total{" .. server .. 'msg_id="1023"}'))
        assert.equal(5, value(text,
            "chathost_chat_messages_total{" .. server .. 'msg_id="unknown"}'))
        assert.is_nil(text:find('msg_id="4000"', 1, true))
        assert.equal(1, value(text,
            "chathost_chat_handler_seconds_count{" .. server .. 'msg_id="1005"}'))
        assert.equal(1, value(text,
            "chathost_chat_handler_seconds_count{" .. server .. 'msg_id="1023"}'))
        assert.equal("gauge", types.chathost_chat_sessions_bound)
    end)

    it("counts the gate's replies by route and JSON error code: a failed login shows", function()
        local gate = start("gate")
        local email = ("nobody.%s@example.com"):format(host.crypto.random_hex(4))
        local res = assert(http.post(gate.port, "/user_login",
            { email = email, passwd = password.xor("wrong1") }))
        assert.equal(200, res.status)
        assert.equal(1009, res.json.error)
        res = assert(http.post(gate.port, "/user_login", { email = email }))
        assert.equal(1016, res.json.error)
        local text = scrape(gate.admin_port)
        local types = assert_conventions(text)
        assert.equal(0, gate:stop())
        assert.equal("counter", types.chathost_gate_results_total)
        assert.equal(1, value(text,
            'chathost_gate_results_total{error="1009",route="POST /user_login"}'))
        assert.equal(1, value(text,
            'chathost_gate_results_total{error="1016",route="POST /user_login"}'))
        assert.equal("counter", types.chathost_hash_verifications_total)
        assert.equal("counter", types.chathost_hash_cpu_seconds_total)
    end)
end)

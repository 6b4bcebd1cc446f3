-- Command line and config.lua: every mistake is one line on stderr naming the problem,
-- and exit status 2; scripts see the config read-only.
local host = require "host"
local util = require "helpers.util"

describe("command line and config", function()
    local dir

    setup(function() dir = assert(host.fs.mkdtemp("config")) end)
    teardown(function() host.fs.rmtree(dir) end)

    local function with_config(text, args, env)
        local path = dir .. "/config.lua"
        assert(host.fs.write(path, text))
        local argv = { }
        for _, a in ipairs(args or { "chat", "--name", "chat1" }) do argv[#argv + 1] = a end
        argv[#argv + 1] = "-c"
        argv[#argv + 1] = path
        -- the addresses that `make test` exports would override the file: unset them
        local e = { CHATHOST_REDIS_PORT = false, CHATHOST_MYSQL_PORT = false }
        for k, v in pairs(env or {}) do e[k] = v end
        return util.chathost(argv, { env = e })
    end

    local function assert_one_line_error(res, pattern)
        assert.equal(2, res.code)
        assert.matches("^chathost: [^\n]*" .. pattern .. "[^\n]*\n$", res.stderr)
    end

    it("rejects an unknown role", function()
        local r = util.chathost({ "bogus" })
        assert_one_line_error(r, "unknown role or command 'bogus'")
    end)

    it("rejects a missing config file", function()
        local r = util.chathost({ "status", "-c", dir .. "/nope.lua" })
        assert_one_line_error(r, "nope%.lua: no such file")
    end)

    it("rejects a value of the wrong type, naming the key", function()
        local r = with_config('return { redis = { port = "abc" } }')
        assert_one_line_error(r, "config: redis%.port: expected an integer, got abc")
    end)

    it("rejects a value out of range", function()
        local r = with_config('return { mysql = { pool_size = 0 } }')
        assert_one_line_error(r, "mysql%.pool_size: 0 is out of range 1%.%.256")
    end)

    it("rejects an unknown setting (a typo) in a known section, naming the nearest", function()
        local r = with_config('return { redis = { pool_sise = 4 } }')
        assert_one_line_error(r, "redis%.pool_sise: unknown setting %(nearest known: redis%.pool_size%)")
    end)

    it("rejects a half TLS setup, or TLS files it cannot read, in any role", function()
        local r = with_config('return { grpc = { tls = { cert_file = "c.pem" } } }')
        assert_one_line_error(r, "grpc%.tls: cert_file and key_file go together")
        r = with_config('return { grpc = { tls = { cert_file = "c.pem", key_file = "k.pem" } } }')
        assert_one_line_error(r, "grpc%.tls: ca_file and cert_file go together")
        r = with_config('return { grpc = { tls = { ca_file = "ca.pem" } } }')
        assert_one_line_error(r, "grpc%.tls: ca_file and cert_file go together")
        -- the gate only dials: it used to start and fail every login later
        r = with_config('return { grpc = { tls = { ca_file = "ca.pem", cert_file = "c.pem", '
            .. 'key_file = "k.pem" } } }', { "gate" })
        assert_one_line_error(r, "grpc%.tls%.cert_file: cannot read c%.pem")
    end)

    it("rejects a gRPC secret too short to be one (an empty one would turn the check off)", function()
        local no_env = { CHATHOST_GRPC_SECRET = false } -- make test's would override the file
        local r = with_config('return { grpc = { secret = "" } }', { "status" }, no_env)
        assert_one_line_error(r, "grpc%.secret: 0 characters, at least 16")
        r = with_config('return { grpc = { secret = "' .. ("s"):rep(15) .. '" } }', { "status" },
            no_env)
        assert_one_line_error(r, "grpc%.secret: 15 characters")
    end)

    it("rejects a resource URL secret too short to sign with", function()
        local no_env = { CHATHOST_RESOURCE_URL_SECRET = false }
        local r = with_config('return { resource = { url_secret = "' .. ("s"):rep(15) .. '" } }',
            { "status" }, no_env)
        assert_one_line_error(r, "resource%.url_secret: 15 characters, at least 16")
        r = with_config('return {}', { "config", "resource.url_secret" },
            { CHATHOST_RESOURCE_URL_SECRET = "short" })
        assert_one_line_error(r, "resource%.url_secret: 5 characters")
        r = with_config('return { resource = { url_secret = "' .. ("s"):rep(16) .. '" } }',
            { "config", "resource.url_ttl_s" }, no_env)
        assert.equal("300\n", r.stdout)
    end)

    it("announces the resource server at its host unless public_host says otherwise", function()
        local function public(text)
            local r = with_config(text, { "config", "resource.public_host" })
            assert.equal(0, r.code, r.stderr)
            return r.stdout
        end
        assert.equal("127.0.0.1\n", public('return {}'))
        assert.equal("10.1.2.3\n", public('return { bind_host = "10.1.2.3" }'))
        assert.equal("127.0.0.1\n", public('return { resource = { host = "0.0.0.0" } }'))
        assert.equal("res.example\n", public('return { resource = { public_host = "res.example" } }'))
        assert_one_line_error(with_config('return { resource = { port = 8080 } }', { "status" }),
            "resource%.port: 8080 is already used by gate%.port")
        assert_one_line_error(with_config('return { resource = { http_port = 8093 } }', { "status" }),
            "resource%.http_port: 8093 is already used by resource%.port")
    end)

    it("rejects an unknown top-level key (a misspelt section), naming the nearest", function()
        -- accepted, redis would fall back to its defaults: somebody else's Redis
        assert_one_line_error(with_config('return { redsi = { port = 7000 } }'),
            "config: redsi: unknown setting %(nearest known: redis%)")
        assert_one_line_error(with_config('return { gaet = { port = 7000 } }', { "config", "gate.port" }),
            "config: gaet: unknown setting %(nearest known: gate%)")
    end)

    it("points the client at this config's own gate unless client.gate_url says otherwise", function()
        local r = with_config('return { gate = { port = 18080 } }', { "config", "client.gate_url" })
        assert.equal(0, r.code, r.stderr)
        assert.equal("http://127.0.0.1:18080\n", r.stdout)
        r = with_config('return { gate = { host = "0.0.0.0", port = 18081 } }', { "config", "client.gate_url" })
        assert.equal("http://127.0.0.1:18081\n", r.stdout) -- a wildcard bind: reached on loopback
        r = with_config('return { gate = { host = "::1", port = 18082 } }', { "config", "client.gate_url" })
        assert.equal("http://[::1]:18082\n", r.stdout)
        r = with_config('return { gate = { port = 18080 }, client = { gate_url = "http://gate.example:80" } }',
            { "config", "client.gate_url" })
        assert.equal("http://gate.example:80\n", r.stdout)
    end)

    it("binds every role to bind_host (loopback by default) unless its own host says otherwise", function()
        local keys = { "config", "gate.host", "verify.host", "status.host", "chat.host" }
        local r = with_config('return {}', keys)
        assert.equal(0, r.code, r.stderr)
        assert.equal(("127.0.0.1\n"):rep(4), r.stdout)
        r = with_config('return { bind_host = "0.0.0.0", status = { host = "127.0.0.2" } }', keys)
        assert.equal("0.0.0.0\n0.0.0.0\n127.0.0.2\n0.0.0.0\n", r.stdout)
    end)

    it("refuses two things on one port, naming both", function()
        assert_one_line_error(with_config('return { status = { port = 50051 } }'),
            "config: status%.port: 50051 is already used by verify%.port")
        assert_one_line_error(with_config('return { chat = { instances = { a = { port = 8080 } } } }',
            { "config", "roles" }), "chat%.instances%.a%.port: 8080 is already used by gate%.port")
        assert_one_line_error(with_config('return { chat = { instances = { a = { port = 7100, rpc_port = 7101 }, '
            .. 'b = { port = 7102, rpc_port = 7101 } } } }'),
            "chat%.instances%.b%.rpc_port: 7101 is already used by chat%.instances%.a%.rpc_port")
        -- Redis, MariaDB and the SMTP server count too (the environment's overrides included)
        assert_one_line_error(with_config('return { verify = { admin_port = 6380 } }'),
            "redis%.port: 6380 is already used by verify%.admin_port")
        assert_one_line_error(with_config('return {}', nil, { CHATHOST_MYSQL_PORT = "8080" }),
            "mysql%.port: 8080 is already used by gate%.port")
        assert_one_line_error(with_config('return { mail = { url = "smtp://127.0.0.1:9102" } }'),
            "mail%.url: 9102 is already used by status%.admin_port")
        -- a gate with 2 workers has admin ports 9100 and 9101
        assert_one_line_error(with_config('return { gate = { workers = 2 } }'),
            "verify%.admin_port: 9101 is already used by gate%.admin_port%+1")
        -- a wildcard bind takes the port on every address
        assert_one_line_error(with_config('return { gate = { host = "0.0.0.0", port = 9101 } }'),
            "verify%.admin_port: 9101 is already used by gate%.port")
    end)

    it("lets things share a port on different hosts, and any number of admin ports be 0", function()
        local r = with_config('return { gate = { host = "127.0.0.2", port = 9101 }, '
            .. 'verify = { admin_port = 0 }, status = { admin_port = 0 }, '
            .. 'chat = { instances = { a = { port = 7100, rpc_port = 7101, admin_port = 0 }, '
            .. 'b = { port = 7102, rpc_port = 7103, admin_port = 0 } } } }', { "config", "gate.port" })
        assert.equal(0, r.code, r.stderr)
        assert.equal("9101\n", r.stdout)
    end)

    it("rejects a config file with a syntax error, naming the line", function()
        local r = with_config('return {\n redis = \n}')
        assert_one_line_error(r, "config%.lua:3:")
    end)

    it("rejects a chat instance that the config does not define", function()
        local r = with_config('return { chat = { instances = { chat1 = {} } } }',
            { "chat", "--name", "chat9" })
        assert_one_line_error(r, "chat%.instances%.chat9: no such instance %(known: chat1%)")
    end)

    it("lets environment variables override the Redis and MySQL addresses", function()
        local r = with_config('return {}', nil, { CHATHOST_REDIS_PORT = "70000" })
        assert_one_line_error(r, "redis%.port: 70000 is out of range")
    end)

    it("resolves another instance's section as that instance does", function()
        -- a shared public_host beats an instance's own bind host; an instance's own
        -- public_host beats both; a 0.0.0.0 bind without public_host is announced as loopback
        local script = dir .. "/instances.lua"
        assert(host.fs.write(script, [[
local host = require "host"
local out = {}
for _, name in ipairs({ "a", "b" }) do
    local s = assert(host.config_instance("chat", name))
    out[#out + 1] = ("%s %s %s %s"):format(s.name, s.public_host, s.port, s.rpc_port)
end
local s = assert(host.config_instance("status", "any"))
out[#out + 1] = "status " .. s.port
out[#out + 1] = tostring(select(2, host.config_instance("chat", "nine")))
out[#out + 1] = tostring(select(2, host.config_instance("nope", "a")))
out[#out + 1] = tostring(pcall(host.config_instance, "chat"))
print(table.concat(out, "\n"))
]]))
        local r = with_config([[return { status = { port = 7001 }, chat = { public_host = "chat.example",
            instances = { a = { host = "10.0.0.3", port = 8101, rpc_port = 9201 },
                b = { public_host = "b.example", port = 8102, rpc_port = 9202 } } } }]],
            { "exec", script })
        assert.equal(0, r.code, r.stderr)
        assert.equal(table.concat({ "a chat.example 8101 9201", "b b.example 8102 9202",
            "status 7001", "chat.instances.nine: no such instance (known: a, b)",
            "unknown role nope", "false" }, "\n") .. "\n", r.stdout)
        r = with_config([[return { chat = { host = "0.0.0.0",
            instances = { a = { port = 8101, rpc_port = 9201 }, b = { port = 8102 } } } }]],
            { "exec", script })
        assert.equal(0, r.code, r.stderr)
        assert.matches("^a 127%.0%.0%.1 8101 9201\n", r.stdout)
    end)

    it("takes a list of IP addresses for gate.trusted_proxies, and nothing else", function()
        local ok = with_config('return { gate = { trusted_proxies = { "10.0.0.1", "::1", '
            .. '"fd00::a:1", "::ffff:10.0.0.2" } } }', { "config", "gate.trusted_proxies.3" })
        assert.equal(0, ok.code, ok.stderr)
        assert.equal("fd00::a:1\n", ok.stdout)
        assert_one_line_error(with_config('return { gate = { trusted_proxies = { "10.0.0.1", '
            .. '"10.0.0.300" } } }', { "gate" }), "gate%.trusted_proxies%[2%]: 10%.0%.0%.300 is not an IP address")
        assert_one_line_error(with_config('return { gate = { trusted_proxies = { "proxy.local" } } }',
            { "gate" }), "gate%.trusted_proxies%[1%]: proxy%.local is not an IP address")
        assert_one_line_error(with_config('return { gate = { trusted_proxies = { "10.0.0.1:80" } } }',
            { "gate" }), "gate%.trusted_proxies%[1%]: 10%.0%.0%.1:80 is not an IP address")
        assert_one_line_error(with_config('return { gate = { trusted_proxies = "10.0.0.1" } }',
            { "gate" }), "gate%.trusted_proxies: expected a list of IP addresses")
        assert_one_line_error(with_config('return { gate = { trusted_proxies = { a = "10.0.0.1" } } }',
            { "gate" }), "gate%.trusted_proxies: expected a list of IP addresses")
    end)

    it("allows WebSocket origins of the gate by default, a list of origins or \"*\" if written",
    function()
        local r = with_config('return { gate = { port = 18080 } }', { "config", "chat.ws_origins" })
        assert.equal(0, r.code, r.stderr)
        assert.equal("chat.ws_origins.1 = http://127.0.0.1:18080\n"
            .. "chat.ws_origins.2 = http://localhost:18080\n", r.stdout)
        r = with_config('return { gate = { host = "10.0.0.5", port = 80 } }', { "config", "chat.ws_origins" })
        assert.equal("chat.ws_origins.1 = http://10.0.0.5:80\n", r.stdout)
        r = with_config('return { chat = { ws_origins = { "https://chat.example", "*" } } }',
            { "config", "chat.ws_origins" })
        assert.equal("chat.ws_origins.1 = https://chat.example\nchat.ws_origins.2 = *\n", r.stdout)
        assert_one_line_error(with_config('return { chat = { ws_origins = { "chat.example" } } }',
            { "chat" }), "chat%.ws_origins%[1%]: chat%.example is not an origin")
        assert_one_line_error(with_config('return { chat = { ws_origins = "*" } }', { "chat" }),
            "chat%.ws_origins: expected a list of origins")
    end)

    it("refuses a WebSocket port another listener has", function()
        assert_one_line_error(with_config('return { chat = { instances = { a = { port = 7100, '
            .. 'rpc_port = 7101, ws_port = 8080 } } } }', { "config", "roles" }),
            "chat%.instances%.a%.ws_port: 8080 is already used by gate%.port")
        assert_one_line_error(with_config('return { chat = { instances = { a = { port = 7100, '
            .. 'rpc_port = 7101, ws_port = 7102 }, b = { port = 7103, rpc_port = 7104, ws_port = 7102 } } } }',
            { "config", "roles" }), "chat%.instances%.b%.ws_port: 7102 is already used by chat%.instances%.a%.ws_port")
    end)

    it("prints the usage for chathost help and COMMAND --help, not an error", function()
        for _, argv in ipairs({ { "help" }, { "--help" }, { "chat", "--name", "chat1", "--help" },
            { "status", "-h" }, { "config", "--help" }, { "migrate", "--help" }, { "exec", "--help" } }) do
            local r = util.chathost(argv)
            assert.equal(0, r.code, table.concat(argv, " ") .. ": " .. r.stderr)
            assert.matches("^usage: chathost ROLE", r.stdout)
            assert.matches("chathost help", r.stdout)
        end
        -- a --help after exec's FILE is the file's argument
        local script = dir .. "/args.lua"
        assert(host.fs.write(script, 'print(table.concat({ ... }, " "))'))
        local r = util.chathost({ "exec", script, "--help" })
        assert.equal(0, r.code, r.stderr)
        assert.equal("--help\n", r.stdout)
    end)

    it("prints a section as key = value lines with full dotted paths, passwords and secrets hidden", function()
        local r = with_config('return { gate = { accounts = { code_max_tries = 7 } }, '
            .. 'mysql = { password = "s3cret" } }', { "config", "gate.accounts" })
        assert.equal(0, r.code, r.stderr)
        assert.matches("^gate%.accounts%.code_ip_limit = 20\n", r.stdout)
        assert.matches("\ngate%.accounts%.code_max_tries = 7\n", r.stdout)
        for line in r.stdout:gmatch("[^\n]+") do assert.matches("^gate%.accounts%.[%w_]+ = %S+$", line) end
        r = with_config('return { mysql = { password = "s3cret" }, chat = { instances = { '
            .. 'a = { port = 7100, rpc_port = 7101 } } } }', { "config", "mysql", "chat.instances" },
            { CHATHOST_MYSQL_PASSWORD = false })
        assert.equal(0, r.code, r.stderr)
        assert.matches("\nmysql%.password = <hidden>\n", r.stdout)
        assert.is_nil(r.stdout:find("s3cret", 1, true))
        assert.matches("\nchat%.instances%.a%.rpc_port = 7101\n", r.stdout)
        r = with_config('return { grpc = { secret = "0123456789abcdef-g" }, resource = { '
            .. 'url_secret = "0123456789abcdef-u" } }', { "config", "grpc", "resource" },
            { CHATHOST_GRPC_SECRET = false, CHATHOST_RESOURCE_URL_SECRET = false })
        assert.equal(0, r.code, r.stderr)
        assert.matches("\ngrpc%.secret = <hidden>\n", r.stdout)
        assert.matches("\nresource%.url_secret = <hidden>\n", r.stdout)
        assert.is_nil(r.stdout:find("0123456789abcdef", 1, true))
        r = with_config('return {}', { "config", "gate.trusted_proxies" })
        assert.equal("gate.trusted_proxies = {}\n", r.stdout)
    end)

    it("rejects an option without its value", function()
        local r = util.chathost({ "status", "-c" })
        assert_one_line_error(r, "%-c needs a value")
    end)
end)

describe("host.config", function()
    it("is read-only", function()
        assert.has_error(function() host.config.redis.port = 1 end, "read-only")
        assert.has_error(function() host.config.newkey = 1 end, "read-only")
    end)

    it("has every default filled in and a deep copy for iteration", function()
        assert.equal(1000, host.config.redis.command_timeout_ms)
        local copy = host.config_copy()
        local n = 0
        for _ in pairs(copy.redis) do n = n + 1 end
        assert.truthy(n >= 9)
        copy.redis.port = 1 -- a copy is the caller's own
        assert.are_not.equal(1, host.config.redis.port)
    end)
end)

-- Roles are entries of a table (host/lua/roles.lua, plus `roles.NAME` in the config): a new
-- role is a config entry and a scripts/NAME folder, with no change to the host.
local host = require "host"
local roles = require "helpers.roles"
local http = require "helpers.http"
local util = require "helpers.util"

-- A throw-away role: an HTTP route and a gRPC method, both answering from its settings.
local ECHO = [[
local host = require "host"
local M = { routes = {} }
M.routes["POST /echo"] = function(req)
    return { echo = req.json.say, greeting = host.config.self.settings.greeting, role = host.role }
end
M["StatusService.Login"] = function(req)
    return { error = 0, uid = req.uid, token = host.config.self.settings.greeting }
end
return M
]]

describe("a role declared in the config", function()
    local echo, grpc_port, admin_port

    setup(function()
        echo = roles.start { role = "echo", copy_scripts = true,
            edit = function(dir) util.write_tree(dir, { ["echo/init.lua"] = ECHO }) end,
            config = function(port)
                grpc_port, admin_port = roles.free_port(), roles.free_port()
                return { roles = { echo = { http_port = port, grpc_port = grpc_port,
                    admin_port = admin_port, stores = { "redis" },
                    settings = { greeting = "hello" } } } }
            end }
    end)
    teardown(function() assert.equal(0, echo:stop()) end)

    it("serves its routes and gRPC methods from scripts/<role>/init.lua", function()
        local res = assert(http.post(echo.port, "/echo", { say = "ping" }))
        assert.equal(200, res.status)
        assert.same({ echo = "ping", greeting = "hello", role = "echo" }, host.json.decode(res.body))
        local rsp = assert(host.grpc.call("127.0.0.1:" .. grpc_port, "StatusService.Login",
            { uid = 7, token = "x" }))
        assert.equal("hello", rsp.token)
    end)

    it("has the admin listener, checking the stores its entry names", function()
        local res = assert(http.get(admin_port, "/healthz"))
        assert.equal(200, res.status)
        local body = host.json.decode(res.body)
        assert.same({ redis = "ok" }, body.checks)
        assert.equal("echo", body.role)
    end)

    it("is listed by `chathost config roles`, its ports by `config ports`", function()
        local r = util.chathost({ "config", "roles", "-c", echo.config_path })
        assert.equal(0, r.code, r.stderr)
        assert.matches("\necho\n$", r.stdout) -- after the built-in roles, in start order
        r = util.chathost({ "config", "ports", "echo", "-c", echo.config_path })
        assert.equal(0, r.code, r.stderr)
        assert.equal(("%d\n%d\n%d\n"):format(echo.port, grpc_port, admin_port), r.stdout)
    end)

    it("refuses a handler table without what its servers serve", function()
        util.edit_file(echo.scripts .. "/echo/init.lua", "return M\n$", "M.routes = nil\nreturn M\n")
        assert(echo:await("routes must be a table", 5000), echo:log())
        local res = assert(http.post(echo.port, "/echo", { say = "still" }))
        assert.equal("still", host.json.decode(res.body).echo) -- the old generation serves
    end)
end)

describe("the roles section of the config", function()
    local dir
    setup(function() dir = assert(host.fs.mkdtemp("roles")) end)
    teardown(function() host.fs.rmtree(dir) end)

    local function run(text, args)
        assert(host.fs.write(dir .. "/config.lua", text))
        args[#args + 1] = "-c"
        args[#args + 1] = dir .. "/config.lua"
        return util.chathost(args, { env = { CHATHOST_REDIS_PORT = false, CHATHOST_MYSQL_PORT = false } })
    end

    local function assert_error(r, pattern)
        assert.equal(2, r.code)
        assert.matches("^chathost: [^\n]*" .. pattern .. "[^\n]*\n$", r.stderr)
    end

    it("refuses a role named like a built-in role or a command", function()
        assert_error(run('return { roles = { gate = { http_port = 7000 } } }', { "config", "roles" }),
            "roles%.gate: a built%-in role has that name")
        assert_error(run('return { roles = { test = {} } }', { "config", "roles" }),
            "roles%.test: a command has that name")
        assert_error(run('return { roles = { ["My-Role"] = {} } }', { "config", "roles" }),
            "roles%.My%-Role: a role name is lower%-case letters, digits and _")
    end)

    it("checks a declared role's keys, stores and ports like any section", function()
        assert_error(run('return { roles = { echo = { http_prot = 7000 } } }', { "config", "roles" }),
            "roles%.echo%.http_prot: unknown setting %(nearest known: roles%.echo%.http_port%)")
        assert_error(run('return { roles = { echo = { stores = { "mongo" } } } }', { "config", "roles" }),
            "roles%.echo%.stores: expected a list of redis, mysql, got mongo")
        assert_error(run('return { roles = { echo = { grpc_port = 8080 } } }', { "config", "roles" }),
            "roles%.echo%.grpc_port: 8080 is already used by gate%.port")
    end)

    it("names the known roles for a role that is neither built in nor declared", function()
        local r = run('return { roles = { echo = {} } }', { "ehco" })
        assert_error(r, "unknown role or command 'ehco' %(expected verify, status, chat, resource, gate, "
            .. "echo, client, or ")
    end)
end)

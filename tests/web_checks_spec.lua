-- The web client's field checks, sentences and password obfuscation (web/checks.js,
-- web/sentences.js, web/password.js) give what the terminal client's Lua modules give
-- (scripts/client/checks.lua and sentences.lua, scripts/lib/password.lua) for the same
-- inputs: run in Node, compared here. Skipped where there is no node.
local host = require "host"
local system = require "helpers.client_system"

local node = host.proc.run({ "sh", "-c", "command -v node" })
if not node or node.code ~= 0 then
    io.stderr:write(spec_file, ": SKIPPED: no node command\n")
    pending("the web client's checks: skipped, no node command")
    return
end

local password = dofile(host.root .. "/scripts/lib/password.lua")

-- Runs a JavaScript module body in Node with the web client's modules imported as
-- checks, say and pw; `inputs` is available as a value; -> the JSON it prints
local function in_node(body, inputs)
    local dir = assert(host.fs.mkdtemp("webchecks"))
    local web = "file://" .. host.root .. "/web/"
    local src = ("import * as checks from %q; import * as say from %q; import { xor } from %q;\n"
        .. "const inputs = %s;\n%s\n"):format(web .. "checks.js", web .. "sentences.js",
        web .. "password.js", host.json.encode(inputs), body)
    assert(host.fs.write(dir .. "/t.mjs", src))
    local r = assert(host.proc.run({ "node", dir .. "/t.mjs" }))
    host.fs.rmtree(dir)
    assert.equal(0, r.code, r.stderr)
    return host.json.decode(r.stdout)
end

describe("the web client's checks and sentences", function()
    local loader, checks, sentences

    setup(function()
        local handlers
        loader, handlers = system.load_client()
        checks, sentences = handlers.checks, handlers.sentences
    end)

    teardown(function() loader:close() end)

    local FORMS = {
        { user = "alice", email = "alice@example.com", password = "abc123", confirm = "abc123", code = "123456" },
        { user = "", email = "alice@example.com", password = "abc123", code = "1" },
        { user = "al ice", email = "a@b.c", password = "abc123", code = "1" },
        { user = "al_ice", email = "a@b.c", password = "abc123", code = "1" },
        { user = "12345", email = "a@b.c", password = "abc123", code = "1" },
        { user = "ab", email = "a@b.c", password = "abc123", code = "1" },
        { user = ("a"):rep(21), email = "a@b.c", password = "abc123", code = "1" },
        { user = "alice", email = "", password = "abc123", code = "1" },
        { user = "alice", email = "alice", password = "abc123", code = "1" },
        { user = "alice", email = "a..b@example.com", password = "abc123", code = "1" },
        { user = "alice", email = "alice@-example.com", password = "abc123", code = "1" },
        { user = "alice", email = "alice@example", password = "abc123", code = "1" },
        { user = "alice", email = "x+y@example.com", password = "abc123", code = "1" },
        { user = "alice", email = "alice@example.com", password = "abc12", code = "1" },
        { user = "alice", email = "alice@example.com", password = "abcdefghijklmnop", code = "1" },
        { user = "alice", email = "alice@example.com", password = "abc 123", code = "1" },
        { user = "alice", email = "alice@example.com", password = "Pass!@#$%^&*.", code = "1" },
        { user = "alice", email = "alice@example.com", password = "abc123", confirm = "abc124", code = "1" },
        { user = "alice", email = "alice@example.com", password = "abc123", confirm = "abc123", code = "  " },
        { user = "  ", email = "  ", password = "", code = "" },
    }

    it("finds the first failing field of each form as the terminal client does", function()
        local js = in_node([[
const out = inputs.map((f) => [checks.register(f), checks.reset(f), checks.login(f), checks.getCode(f.email)]
  .map((r) => r ? [r.field, r.message] : "ok"));
console.log(JSON.stringify(out));]], FORMS)
        for i, f in ipairs(FORMS) do
            local function lua(ok, msg, field) return ok and "ok" or { field, msg } end
            local want = { lua(checks.register(f)), lua(checks.reset(f)), lua(checks.login(f)),
                lua(checks.get_code(f.email)) }
            assert.same(want, js[i], host.json.encode(f))
        end
    end)

    it("says every error code as the terminal client says it, and has one for each", function()
        local replies = {
            { 1016, { field = "email" } }, { 1016, { field = "touid" } }, { 1016, {} },
            { 1017, { retry_after = 2.5 } }, { 1017, {} }, { 4242, {} },
        }
        for code in pairs(sentences.BY_CODE) do replies[#replies + 1] = { code, {} } end
        local js = in_node([[
console.log(JSON.stringify({ said: inputs.replies.map(([c, r]) => say.of(c, r)),
  missing: inputs.codes.filter((c) => !say.BY_CODE[c]) }));]], {
            replies = replies, codes = (function()
                local list = {}
                for _, code in pairs(host.errors) do if code ~= 0 then list[#list + 1] = code end end
                return list
            end)() })
        for i, r in ipairs(replies) do assert.equal(sentences.of(r[1], r[2]), js.said[i], tostring(r[1])) end
        assert.same({}, js.missing)
    end)

    it("obfuscates passwords as docs/protocol.md §3.3 says", function()
        local clear = { "abc123", "Passw0rd!", "abcdef", "abcdefghijklmno", "é" }
        local js = in_node("console.log(JSON.stringify(inputs.map(xor)));", clear)
        for i, c in ipairs(clear) do assert.equal(password.xor(c), js[i], c) end
        assert.equal("gde745", js[1])
    end)
end)

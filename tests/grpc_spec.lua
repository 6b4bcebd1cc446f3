-- The gRPC bridge: host.grpc.serve and host.grpc.call over real HTTP/2 on loopback, and
-- interop with Python grpcio in both directions.
local host = require "host"
local py = require "helpers.grpc_py"
local util = require "helpers.util"
local S = host.grpc.status

describe("gRPC bridge", function()
    local server, target
    local calls = 0

    local handlers = {
        ["StatusService.GetChatServer"] = function(req, ctx)
            calls = calls + 1
            return { error = 0, host = "127.0.0.1", port = "8090", token = "t" .. req.uid }
        end,
        ["StatusService.Login"] = function(req)
            if req.uid == 1 then error("login exploded") end
            if req.uid == 2 then return nil, S.NOT_FOUND, "no such user" end
            if req.uid == 3 then host.timer.sleep(500) end
            if req.uid == 4 then return { error = 0, nope = 1 } end
            if req.uid == 5 then return "not a table" end
            return { error = 0, uid = req.uid, token = req.token }
        end,
        ["ChatService.NotifyKickUser"] = function(req, ctx)
            return { error = 0, uid = req.uid, _ctx = nil }
        end,
    }

    setup(function()
        server = assert(host.grpc.serve { address = "127.0.0.1:0", handlers = handlers })
        target = "127.0.0.1:" .. server.port
    end)

    teardown(function() server:close() end)

    it("calls a handler and gets its reply", function()
        local rsp = assert(host.grpc.call(target, "StatusService.GetChatServer", { uid = 1001 }))
        assert.same({ error = 0, host = "127.0.0.1", port = "8090", token = "t1001", ws_port = "" }, rsp)
    end)

    it("passes the deadline and the peer to the handler", function()
        local seen
        handlers["ChatService.NotifyKickUser"] = function(req, ctx)
            seen = ctx
            return { error = 0, uid = req.uid }
        end
        assert(host.grpc.call(target, "ChatService.NotifyKickUser", { uid = 9 }, { timeout_ms = 1500 }))
        assert.equal("ChatService.NotifyKickUser", seen.method)
        assert.truthy(seen.deadline_ms > 0 and seen.deadline_ms <= 1600, seen.deadline_ms) -- gRPC rounds the timeout header up
        assert.matches("127%.0%.0%.1", seen.peer)
    end)

    it("tells a handler the time left before its caller's deadline (ctx:remaining_ms())", function()
        local at, left_before, left_after
        handlers["ChatService.NotifyKickUser"] = function(req, ctx)
            at, left_before = ctx.deadline_at, ctx:remaining_ms()
            host.timer.sleep(20)
            left_after = ctx:remaining_ms()
            return { error = 0, uid = req.uid }
        end
        assert(host.grpc.call(target, "ChatService.NotifyKickUser", { uid = 9 },
            { timeout_ms = 1500 }))
        assert.truthy(left_before > 0 and left_before <= 1600, left_before)
        assert.truthy(left_after < left_before, left_after) -- counts down, on the monotonic clock
        local now = host.timer.monotonic()
        assert.truthy(at > now - 1600 and at <= now + 1600, at)
    end)

    it("gives 0 left past the deadline, math.huge without one", function()
        local seen
        handlers["ChatService.NotifyKickUser"] = function(req, ctx)
            host.timer.sleep(300)
            seen = { ctx:remaining_ms(), ctx.remaining_ms({}) } -- then returns without a yield
            return { error = 0, uid = req.uid }
        end
        local rsp, _, code = host.grpc.call(target, "ChatService.NotifyKickUser", { uid = 9 },
            { timeout_ms = 100 })
        assert.same({ nil, S.DEADLINE_EXCEEDED }, { rsp, code })
        assert(util.wait_until(function() return seen end, 5000, "the handler"))
        assert.same({ 0, math.huge }, seen)
    end)

    it("answers UNIMPLEMENTED at once for a method without a handler", function()
        local rsp, err, code = host.grpc.call(target, "ChatService.SendChatMsg", { fromuid = 1 })
        assert.is_nil(rsp)
        assert.equal(S.UNIMPLEMENTED, code)
        assert.matches("^UNIMPLEMENTED: ChatService.SendChatMsg has no handler", err)
    end)

    it("answers INTERNAL when a handler raises, and keeps serving", function()
        local rsp, err, code = host.grpc.call(target, "StatusService.Login", { uid = 1 })
        assert.is_nil(rsp)
        assert.equal(S.INTERNAL, code)
        assert.matches("login exploded", err)
        assert(host.grpc.call(target, "StatusService.Login", { uid = 7, token = "x" }))
    end)

    it("lets a handler answer an explicit status", function()
        local rsp, err, code = host.grpc.call(target, "StatusService.Login", { uid = 2 })
        assert.is_nil(rsp)
        assert.equal(S.NOT_FOUND, code)
        assert.equal("NOT_FOUND: no such user", err)
    end)

    it("answers INTERNAL naming the field when a reply does not fit the proto", function()
        local _, err, code = host.grpc.call(target, "StatusService.Login", { uid = 4 })
        assert.equal(S.INTERNAL, code)
        assert.matches("LoginRsp.nope: no such field", err)
        local _, err2, code2 = host.grpc.call(target, "StatusService.Login", { uid = 5 })
        assert.equal(S.INTERNAL, code2)
        assert.matches("no reply", err2)
    end)

    it("returns DEADLINE_EXCEEDED when the handler outlives the caller's deadline", function()
        local t0 = host.timer.monotonic()
        local rsp, err, code = host.grpc.call(target, "StatusService.Login", { uid = 3 }, { timeout_ms = 100 })
        assert.is_nil(rsp)
        assert.equal(S.DEADLINE_EXCEEDED, code)
        assert.truthy(host.timer.monotonic() - t0 < 450) -- did not wait for the handler
        -- the late reply to the dead call does no harm
        host.timer.sleep(450)
        assert(host.grpc.call(target, "StatusService.GetChatServer", { uid = 1 }))
    end)

    it("returns UNAVAILABLE quickly for a dead target", function()
        local rsp, err, code = host.grpc.call("127.0.0.1:1", "StatusService.GetChatServer", { uid = 1 },
            { timeout_ms = 5000 })
        assert.is_nil(rsp)
        assert.equal(S.UNAVAILABLE, code)
        assert.matches("^UNAVAILABLE", err)
    end)

    it("rejects a request that does not fit the proto before sending it", function()
        local rsp, err, code = host.grpc.call(target, "StatusService.GetChatServer", { uid = "abc" })
        assert.is_nil(rsp)
        assert.equal(S.INVALID_ARGUMENT, code)
        assert.matches("GetChatServerReq.uid: expected an integer", err)
        assert.has_error(function() host.grpc.call(target, "StatusService.Nope", {}) end, "no method")
    end)

    it("serves many calls in flight at once", function()
        local hs = {}
        for i = 1, 200 do
            hs[i] = host.spawn(host.grpc.call, target, "StatusService.GetChatServer", { uid = i })
        end
        for i = 1, 200 do
            local ok, rsp = hs[i]:wait()
            assert.is_true(ok)
            assert.equal("t" .. i, rsp.token)
        end
    end)

    it("answers RESOURCE_EXHAUSTED beyond max_inflight_calls and serves again after", function()
        local s2 = assert(host.grpc.serve { address = "127.0.0.1:0", max_inflight_calls = 2,
            handlers = { ["StatusService.Login"] = function() host.timer.sleep(300) return { error = 0 } end } })
        local t2 = "127.0.0.1:" .. s2.port
        local hs = {}
        for i = 1, 4 do hs[i] = host.spawn(host.grpc.call, t2, "StatusService.Login", {}) end
        local ok_count, exhausted = 0, 0
        for i = 1, 4 do
            local _, rsp, _, code = hs[i]:wait()
            if rsp then ok_count = ok_count + 1 elseif code == S.RESOURCE_EXHAUSTED then exhausted = exhausted + 1 end
        end
        assert.equal(2, ok_count)
        assert.equal(2, exhausted)
        assert(host.grpc.call(t2, "StatusService.Login", {}))
        s2:close()
    end)

    it("refuses a second server on a port in use", function()
        local s2, err = host.grpc.serve { address = target, handlers = {} }
        assert.is_nil(s2)
        assert.matches("cannot listen on 127%.0%.0%.1:%d+", err)
    end)

    it("finds handlers through a function, so a reload swaps them", function()
        local version = 1
        local s2 = assert(host.grpc.serve { address = "127.0.0.1:0", handlers = function(name)
            if name == "StatusService.Login" then
                return function(req) return { error = 0, uid = version } end
            end
        end })
        local t2 = "127.0.0.1:" .. s2.port
        assert.equal(1, host.grpc.call(t2, "StatusService.Login", {}).uid)
        version = 2
        assert.equal(2, host.grpc.call(t2, "StatusService.Login", {}).uid)
        s2:close()
    end)
end)

describe("gRPC interop with Python grpcio", function()
    local server, target

    setup(function()
        server = assert(host.grpc.serve { address = "127.0.0.1:0", handlers = {
            ["StatusService.GetChatServer"] = function(req)
                return { error = 0, host = "h", port = "8090", token = "tok" .. req.uid }
            end,
            ["ChatService.NotifyTextChatMsg"] = function(req)
                return { error = 0, fromuid = req.fromuid, touid = req.touid, thread_id = req.thread_id,
                    textmsgs = req.textmsgs }
            end,
        } })
        target = "127.0.0.1:" .. server.port
    end)

    teardown(function() server:close() end)

    it("answers a Python stub", function()
        local r = py.call(target, "StatusService.GetChatServer", { uid = 1001 })
        assert.is_true(r.ok)
        assert.same({ error = 0, host = "h", port = "8090", token = "tok1001", ws_port = "" }, r.reply)
    end)

    it("round-trips repeated nested messages with Python", function()
        local req = { fromuid = 1, touid = 2, thread_id = 3, textmsgs = {
            { unique_id = "u1", msg_id = 10, msgcontent = "hi 😀", chat_time = "now" },
            { unique_id = "u2", msg_id = 11, msgcontent = "", chat_time = "" } } }
        local r = py.call(target, "ChatService.NotifyTextChatMsg", req)
        assert.is_true(r.ok)
        assert.equal(2, #r.reply.textmsgs)
        assert.equal("hi 😀", r.reply.textmsgs[1].msgcontent)
        assert.equal(11, r.reply.textmsgs[2].msg_id)
    end)

    it("answers UNIMPLEMENTED to Python for a method without handler or unknown to the proto", function()
        local r = py.call(target, "StatusService.Login", { uid = 1 })
        assert.is_false(r.ok)
        assert.equal("UNIMPLEMENTED", r.code)
        local raw = py.raw(target, "/message.NoSuchService/Nope")
        assert.is_false(raw.ok)
        assert.equal("UNIMPLEMENTED", raw.code)
    end)

    it("calls a Python grpcio server", function()
        local srv = py.serve()
        local rsp = assert(host.grpc.call("127.0.0.1:" .. srv.port, "StatusService.GetChatServer", { uid = 42 }))
        assert.same({ error = 0, host = "py", port = "1", token = "uid-42", ws_port = "" }, rsp)
        srv.proc:kill()
        srv.proc:wait()
    end)

    -- make asan: LeakSanitizer fails the run if the server was allocated before the option
    -- that raised was read.
    it("raises on a bad option without leaking a server", function()
        local ok, err = pcall(host.grpc.serve, { address = "127.0.0.1:0", handlers = {},
            max_inflight_calls = "many" })
        assert.is_false(ok)
        assert.matches("number expected", err)
    end)
end)

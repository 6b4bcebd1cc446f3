-- host.pb: protobuf messages <-> Lua tables from the descriptors of proto/message.proto.
local host = require "host"
local pb, json = host.pb, host.json

-- A value for every message of the proto, nested and repeated fields filled.
local SAMPLES = {
    GetVarifyReq = { email = "a@b.c" },
    GetVarifyRsp = { error = 0, email = "a@b.c", code = "" },
    GetChatServerReq = { uid = 1001 },
    GetChatServerRsp = { error = 0, host = "127.0.0.1", port = "8090", token = "t", ws_port = "8096" },
    LoginReq = { uid = 1001, token = "abc" },
    LoginRsp = { error = 1010, uid = 1001, token = "abc" },
    AddFriendReq = { applyuid = 1, name = "n", desc = "d", icon = "i", nick = "聊天", sex = 1, touid = 2 },
    AddFriendRsp = { error = 0, applyuid = 1, touid = 2 },
    RplyFriendReq = { rplyuid = 1, agree = true, touid = 2 },
    RplyFriendRsp = { error = 0, rplyuid = 1, touid = 2 },
    SendChatMsgReq = { fromuid = 1, touid = 2, message = "hi" },
    SendChatMsgRsp = { error = 0, fromuid = 1, touid = 2 },
    AddFriendMsg = { sender_id = 1, unique_id = "u", msg_id = 3, thread_id = 4, msgcontent = "m", status = 2 },
    AuthFriendReq = { fromuid = 1, touid = 2, textmsgs = {
        { sender_id = 1, unique_id = "u1", msg_id = 3, thread_id = 4, msgcontent = "hello", status = 2 },
        { sender_id = 2, unique_id = "u2", msg_id = 4, thread_id = 4, msgcontent = "😀", status = 2 } } },
    AuthFriendRsp = { error = 0, fromuid = 1, touid = 2 },
    TextChatMsgReq = { fromuid = 1, touid = 2, thread_id = 7, textmsgs = {
        { unique_id = "a", msg_id = 1, msgcontent = "x", chat_time = "2026-01-01 00:00:00" } } },
    TextChatData = { unique_id = "a", msg_id = 1, msgcontent = "x", chat_time = "t" },
    TextChatMsgRsp = { error = 0, fromuid = 1, touid = 2, thread_id = 7, textmsgs = {} },
    KickUserReq = { uid = 5 },
    KickUserRsp = { error = 0, uid = 5 },
    NotifyChatImgReq = { from_uid = 1, to_uid = 2, message_id = 3, file_name = "f.png", total_size = 2 ^ 40, thread_id = 4 },
    NotifyChatImgRsp = { error = 0, from_uid = 1, to_uid = 2, message_id = 3, file_name = "f", total_size = 5, thread_id = 4 },
    PushItem = { touid = 2, msg_id = 1067, body = '{"error":0}', touids = { 2, 5 } },
    NotifyBatchReq = { items = { { touid = 2, msg_id = 1019, body = '{"chat_datas":[]}', touids = {} },
        { touid = 3, msg_id = 1011, body = "\0\255 bytes, not text", touids = { 3 } } } },
    NotifyBatchRsp = { error = 0, errors = { 0, 1011, 1016 } },
}

describe("protobuf conversion", function()
    it("round-trips every message of the proto", function()
        local names = pb.messages()
        assert.equal(25, #names)
        for _, full in ipairs(names) do
            local short = full:match("%.(%w+)$")
            local sample = assert(SAMPLES[short], "no sample for " .. short)
            local bytes = assert(pb.encode(full, sample))
            local back = assert(pb.decode(full, bytes))
            assert.same(sample, back, short)
            -- and the bytes are stable
            assert.equal(bytes, assert(pb.encode(short, back)), short)
        end
    end)

    it("decodes unset fields to their proto3 defaults", function()
        local m = assert(pb.decode("LoginRsp", ""))
        assert.same({ error = 0, uid = 0, token = "" }, m)
    end)

    it("decodes repeated fields as arrays that stay arrays in JSON, also when empty", function()
        local empty = assert(pb.decode("TextChatMsgRsp", assert(pb.encode("TextChatMsgRsp", { error = 1 }))))
        assert.equal('[]', json.encode(empty.textmsgs))
        local full = assert(pb.decode("AuthFriendReq", assert(pb.encode("AuthFriendReq", SAMPLES.AuthFriendReq))))
        local back = json.decode(json.encode(full))
        assert.equal(2, #back.textmsgs)
        assert.equal("😀", back.textmsgs[2].msgcontent)
    end)

    it("names the field in every conversion error", function()
        local cases = {
            { "LoginReq", { uid = "x" }, "LoginReq.uid: expected an integer" },
            { "LoginReq", { uid = 1.5 }, "LoginReq.uid: expected an integer, got 1.5" },
            { "LoginReq", { uid = 2 ^ 31 }, "LoginReq.uid: 2147483648 is out of range" },
            { "LoginReq", { uid = " 5" }, 'LoginReq.uid: expected an integer, got " 5"' },
            { "LoginReq", { uid = "+5" }, 'LoginReq.uid: expected an integer, got "+5"' },
            { "NotifyChatImgReq", { total_size = "99999999999999999999" },
                "NotifyChatImgReq.total_size: 99999999999999999999 is out of range" },
            { "NotifyChatImgReq", { total_size = 2 ^ 63 },
                "NotifyChatImgReq.total_size: 9223372036854775808 is out of range" },
            { "NotifyChatImgReq", { total_size = -2 ^ 63 - 2 ^ 11 },
                "NotifyChatImgReq.total_size: -9223372036854777856 is out of range" },
            { "LoginReq", { uidd = 1 }, "LoginReq.uidd: no such field in message.LoginReq" },
            { "LoginReq", { token = {} }, "LoginReq.token: expected a string" },
            { "LoginReq", { token = "a\0b" }, "LoginReq.token: string contains a NUL byte" },
            { "LoginReq", { token = "\255" }, "LoginReq.token: string is not valid UTF-8" },
            { "RplyFriendReq", { agree = 1 }, "RplyFriendReq.agree: expected a boolean" },
            { "AuthFriendReq", { textmsgs = { { msg_id = "z" } } }, "AuthFriendReq.textmsgs[1].msg_id: expected an integer" },
            { "AuthFriendReq", { textmsgs = { a = 1 } }, "AuthFriendReq.textmsgs: expected an array" },
            { "AuthFriendReq", { textmsgs = { 5 } }, "AuthFriendReq.textmsgs[1]: expected a table" },
        }
        for _, c in ipairs(cases) do
            local v, err = pb.encode(c[1], c[2])
            assert.is_nil(v)
            assert.equal(c[3], err:sub(1, #c[3]))
        end
    end)

    it("treats null and nil fields as unset", function()
        local bytes = assert(pb.encode("LoginReq", { uid = 7, token = host.null }))
        assert.same({ uid = 7, token = "" }, pb.decode("LoginReq", bytes))
    end)

    it("keeps 64-bit integers beyond 2^53 exact as strings", function()
        local bytes = assert(pb.encode("NotifyChatImgReq", { total_size = "9007199254740993" }))
        assert.equal("9007199254740993", pb.decode("NotifyChatImgReq", bytes).total_size)
        bytes = assert(pb.encode("NotifyChatImgReq", { total_size = "-9223372036854775808" }))
        assert.equal("-9223372036854775808", pb.decode("NotifyChatImgReq", bytes).total_size)
    end)

    it("rejects bytes that are not the message and unknown type names", function()
        local v, err = pb.decode("LoginReq", "\255\255\255")
        assert.is_nil(v)
        assert.matches("cannot decode message.LoginReq", err)
        assert.has_error(function() pb.encode("NoSuchType", {}) end, "no message type NoSuchType")
    end)

    it("lists every method of every service", function()
        local m = pb.methods()
        local set = {}
        for _, name in ipairs(m) do set[name] = true end
        assert.truthy(set["StatusService.GetChatServer"])
        assert.truthy(set["VarifyService.GetVarifyCode"])
        assert.truthy(set["ChatService.NotifyKickUser"])
        assert.truthy(set["ChatService.NotifyBatch"])
        assert.equal(11, #m)
    end)
end)

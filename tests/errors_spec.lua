-- host.errors: the protocol's error codes (docs/protocol.md §2) from the host's one list
-- (host/errors.h), which the C replies use, and scripts/lib/errors.lua, built from it.
local host = require "host"

-- The codes as the protocol documents them: a changed or lost code fails here.
local DOCUMENTED = {
    Success = 0, Error_Json = 1001, RPCFailed = 1002, VarifyExpired = 1003,
    VarifyCodeErr = 1004, UserExist = 1005, PasswdErr = 1006, EmailNotMatch = 1007,
    PasswdUpFailed = 1008, PasswdInvalid = 1009, TokenInvalid = 1010, UidInvalid = 1011,
    CreateChatFailed = 1012, LoadChatFailed = 1013, NotLoggedIn = 1014,
    PermissionDenied = 1015, InvalidParams = 1016, RateLimited = 1017, ServerBusy = 1018,
    Internal = 1019,
    -- the resource channel's (§13)
    FileNotFound = 1100, FileTooLarge = 1101, FileTypeRefused = 1102, QuotaExceeded = 1103,
    BadChunk = 1104, StorageFailed = 1105, NotParticipant = 1106, UploadIncomplete = 1107,
    NameTaken = 1108,
}

describe("error codes", function()
    it("are the documented codes under the documented names, in host.errors", function()
        assert.same(DOCUMENTED, host.errors)
    end)

    it("reach the scripts as lib.errors, the same names and codes", function()
        local errors = dofile(host.root .. "/scripts/lib/errors.lua")
        assert.same(host.errors, errors)
    end)

    it("give each script its own copy: a script changing one leaves the host's alone", function()
        local errors = dofile(host.root .. "/scripts/lib/errors.lua")
        errors.Internal = 1
        assert.equal(1019, host.errors.Internal)
    end)
end)

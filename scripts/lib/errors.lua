-- lib.errors: the error codes of docs/protocol.md §2, shared by every role.
return {
    Success = 0,
    Error_Json = 1001,        -- body is not a JSON object, or a field has the wrong JSON type
    RPCFailed = 1002,         -- a gRPC call to another role failed or timed out
    VarifyExpired = 1003,     -- no verification code for that e-mail
    VarifyCodeErr = 1004,     -- verification code wrong
    UserExist = 1005,         -- user name or e-mail already registered
    PasswdErr = 1006,         -- register: passwd and confirm differ
    EmailNotMatch = 1007,     -- reset: user name and e-mail do not belong together
    PasswdUpFailed = 1008,    -- reset: the update failed
    PasswdInvalid = 1009,     -- login: unknown e-mail or wrong password
    TokenInvalid = 1010,      -- chat login: token missing, expired or wrong
    UidInvalid = 1011,        -- the user named does not exist
    CreateChatFailed = 1012,
    LoadChatFailed = 1013,
    NotLoggedIn = 1014,
    PermissionDenied = 1015,
    InvalidParams = 1016,     -- the reply says which field in "field"
    RateLimited = 1017,       -- "retry_after" says how many seconds
    ServerBusy = 1018,        -- a lock or a pool could not be had in time; safe to retry
    Internal = 1019,
}

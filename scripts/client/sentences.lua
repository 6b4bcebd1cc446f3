-- client.sentences: every error the client can meet as one clear sentence: the server's
-- codes (docs/protocol.md §2) in one table, a reply's details (retry_after, field)
-- filled in, and the client's own failures (network, unreadable replies).
local M = {}

M.BY_CODE = {
    [1001] = "The server could not read the request",
    [1002] = "A server this needs is not answering; try again in a moment",
    [1003] = "The verification code has expired or was never sent; request a new one",
    [1004] = "The verification code is wrong",
    [1005] = "That user name or e-mail address is already registered",
    [1006] = "Passwords do not match",
    [1007] = "That user name and e-mail address do not belong to the same account",
    [1008] = "The password could not be changed; try again",
    [1009] = "Wrong e-mail or password",
    [1010] = "Your session has expired; log in again",
    [1011] = "No such user",
    [1012] = "The chat could not be created; try again",
    [1013] = "The chat history could not be loaded; try again",
    [1014] = "You are not logged in to the chat server",
    [1015] = "Not allowed: you are not friends, or there is no such friend request",
    [1016] = "Invalid %s",
    [1017] = "Too many attempts; try again in %s seconds",
    [1018] = "The server is busy; try again",
    [1019] = "The server had an internal error; try again later",
    [1100] = "No such image (or its upload expired)",
    [1101] = "The image is larger than the server takes",
    [1102] = "The server does not take files of that type",
    [1103] = "Your storage on the server is full, or too many uploads are unfinished",
    [1104] = "The server refused a piece of the file; send it again",
    [1105] = "The server could not store the file; try again later",
    [1106] = "That image is not in a chat of yours",
    [1107] = "That image is still being uploaded; try again when it has arrived",
    [1108] = "That file name is taken; send the image again",
}

-- What the protocol's field names are to a person (1016 says which field).
M.FIELDS = {
    user = "user name", email = "e-mail address", passwd = "password",
    confirm = "password confirmation", varifycode = "verification code",
    nick = "nickname", icon = "icon", sex = "sex", uid = "user id", touid = "user id",
    fromuid = "user id", other_id = "user id", applyname = "greeting", bakname = "remark",
    back = "remark", content = "message text", text_array = "message", unique_id = "message id",
    thread_id = "chat", message_id = "message position", token = "login token",
    body_len = "request size",
}

M.KICKED = "You were signed out: your account logged in somewhere else."
M.NOT_LOGGED_IN = "You are not logged in"
M.CLOSED = "The client is closed"
M.LOST = "The connection to the chat server was lost"
M.BAD_REPLY = "The server's reply could not be read"
M.NO_RESOURCE = "Images are unavailable"

-- of(code, reply?) -> the sentence for a server error code
function M.of(code, reply)
    reply = type(reply) == "table" and reply or {}
    local s = M.BY_CODE[code]
    if not s then return ("The server answered with error %s"):format(tostring(code)) end
    if code == 1016 then
        local field = type(reply.field) == "string" and (M.FIELDS[reply.field] or reply.field)
        return s:format(field or "request")
    end
    if code == 1017 then
        local n = tonumber(reply.retry_after)
        if not n then return "Too many attempts; try again later" end
        return s:format(("%d"):format(math.ceil(n)))
    end
    return s
end

-- network(what, err) -> the sentence for a failure to talk to a server
function M.network(what, err)
    err = tostring(err or "")
    if err == "timeout" then return ("The %s did not answer in time"):format(what) end
    if err:find("refused", 1, true) then
        return ("Cannot reach the %s (connection refused)"):format(what)
    end
    return ("Cannot reach the %s (%s)"):format(what, err)
end

-- http(status) -> the sentence for an HTTP answer that carries no JSON error
function M.http(status)
    return ("The gate answered HTTP %s"):format(tostring(status))
end

return M

-- client.http_mgr: the HTTP manager of the original Qt client (its HttpMgr) on
-- host.http.request: every request to the gate is tagged with a ReqId and the module
-- (register, reset, login) that asked, and its reply is interpreted by the handler the
-- ReqId maps to. Unlike the original it has a deadline, retries network failures with
-- backoff, and reports each gate error code as a sentence (client.sentences). The gate
-- may be https:// (its certificate checked against ca_file, else the system's CAs).
local host = require "host"
local backoff = require "client.backoff"
local sentences = require "client.sentences"
local errors = require "lib.errors"

local M = {}
M.__index = M

M.ReqId = { GET_VARIFY_CODE = 1001, REG_USER = 1002, RESET_PWD = 1003, LOGIN_USER = 1004 }
M.Modules = { REGISTER = "register", RESET = "reset", LOGIN = "login" }

-- Per ReqId: the route and what may be sent again after a failure. Every request is sent
-- again when the connection could not be made (nothing reached the gate); only a login
-- also after a timeout or a cut answer (sending it twice does no harm), and after the
-- codes that say another server was briefly unavailable.
local ROUTES = {
    [M.ReqId.GET_VARIFY_CODE] = { path = "/get_varifycode" },
    [M.ReqId.REG_USER] = { path = "/user_register" },
    [M.ReqId.RESET_PWD] = { path = "/reset_pwd" },
    [M.ReqId.LOGIN_USER] = { path = "/user_login", idempotent = true,
        retry_codes = { [errors.RPCFailed] = true, [errors.ServerBusy] = true } },
}

local function bad_reply() return nil, sentences.BAD_REPLY, "reply" end

-- The ReqId -> handler map: each turns a successful reply (error 0) into the result the
-- module gets, or refuses a reply that lacks what it needs.
M.handlers = {
    [M.ReqId.GET_VARIFY_CODE] = function(reply) return { email = reply.email } end,
    [M.ReqId.REG_USER] = function(reply)
        if type(reply.uid) ~= "number" then return bad_reply() end
        return { uid = reply.uid, user = reply.user, email = reply.email }
    end,
    [M.ReqId.RESET_PWD] = function(reply) return { user = reply.user, email = reply.email } end,
    [M.ReqId.LOGIN_USER] = function(reply)
        local chat_host = reply.chathost or reply.host
        local port = tonumber(reply.chatport or reply.port)
        if type(reply.uid) ~= "number" or type(reply.token) ~= "string"
            or type(chat_host) ~= "string" or not port then
            return bad_reply()
        end
        -- reshost/resport (JSON strings): the resource server, for images (client.images);
        -- tls: both addresses are the TLS proxy's (docs/protocol.md §5.6)
        return { uid = reply.uid, email = reply.email, token = reply.token, host = chat_host,
            port = port, reshost = reply.reshost, resport = reply.resport,
            tls = reply.tls == true }
    end,
}

-- new{gate=url, ca_file=?, timeout_ms=, attempts=, retry_min_ms=, retry_max_ms=, sleep=?}
--   -> mgr
function M.new(opts)
    return setmetatable({ gate = (opts.gate:gsub("/+$", "")), ca_file = opts.ca_file,
        timeout_ms = opts.timeout_ms,
        attempts = opts.attempts, min_ms = opts.retry_min_ms, max_ms = opts.retry_max_ms,
        sleep = opts.sleep }, M)
end

-- The request never reached the gate: safe to send again whatever it is.
local function not_sent(err)
    err = tostring(err)
    return err == "cannot connect" or err:find("refused", 1, true) ~= nil
        or err:find("unreachable", 1, true) ~= nil or err:find("^connect timeout") ~= nil
end

-- A TLS failure (a certificate no trusted CA signed, made out to another name...) does
-- not go away by sending again: it is reported at once.
local function tls_failure(err) return tostring(err):find("^tls: ") ~= nil end

-- One try: -> reply table | nil, sentence, code, retryable
function M:try(req_id, body)
    local route = ROUTES[req_id]
    local res, err = host.http.request { url = self.gate .. route.path, method = "POST",
        headers = { ["Content-Type"] = "application/json" }, body = host.json.encode(body),
        timeout_ms = self.timeout_ms, ca_file = self.ca_file }
    if not res then
        return nil, sentences.network("gate at " .. self.gate, err), "network",
            (route.idempotent or not_sent(err)) and not tls_failure(err)
    end
    local reply = host.json.safe.decode(res.body)
    if type(reply) ~= "table" or type(reply.error) ~= "number" then
        if res.status ~= 200 then
            return nil, sentences.http(res.status), "http", res.status >= 502
        end
        return nil, sentences.BAD_REPLY, "reply"
    end
    if reply.error ~= 0 then
        local retry = route.retry_codes and route.retry_codes[reply.error] or false
        return nil, sentences.of(reply.error, reply), reply.error, retry
    end
    return reply
end

-- post(req_id, module, body) -> the handler's result | nil, sentence, code. code: the
-- gate's error code, or "network", "http", "reply" for the client's own failures.
function M:post(req_id, module, body)
    assert(ROUTES[req_id], "unknown ReqId")
    local reply, err, code = backoff.run({ attempts = self.attempts, min_ms = self.min_ms,
        max_ms = self.max_ms, sleep = self.sleep }, function() return self:try(req_id, body) end)
    host.log.debug("client ", module, " req ", req_id, ": ", reply and "ok" or tostring(code))
    if not reply then return nil, err, code end
    return M.handlers[req_id](reply, module)
end

return M

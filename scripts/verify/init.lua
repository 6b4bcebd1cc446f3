-- The verify role (VarifyService): creates or reuses a 6-digit code for an e-mail address,
-- stores it in Redis with a TTL, and mails it. The code never leaves this process other
-- than by mail: not in the reply, not in the logs; the address is logged masked.
--
-- Deadlines nest: the mail gets at most mail.timeout_ms and never more than the caller's
-- deadline leaves, minus verify.reply_margin_ms to clean up and answer. A mail that fails
-- is answered with gRPC status INTERNAL and a message naming the mail's failure (the gate
-- logs it), not left to run into the caller's deadline (which reads as "unreachable").
local host = require "host"
local errors = require "lib.errors"
local keys = require "lib.keys"
local codes = require "lib.codes"
local validate = require "lib.validate"
local mask = require "lib.mask"

local M = {}

local INTERNAL = host.grpc.status.INTERNAL

-- The mail's time: mail.timeout_ms, cut to what the caller's deadline leaves minus the
-- reply margin (may be 0 or less: then there is no time to send).
local function mail_budget(ctx, cfg)
    local left = ctx and ctx.remaining_ms and ctx:remaining_ms() or math.huge
    return math.floor(math.min(host.config.mail.timeout_ms, left - cfg.reply_margin_ms))
end

M["VarifyService.GetVarifyCode"] = function(req, ctx)
    local cfg = host.config.self
    local email = req.email
    if not validate.email(email) then return { error = errors.InvalidParams, email = email } end
    email = email:lower()
    local rate_key = keys.rate("mail", email)
    local fresh, err = host.redis.call("SET", rate_key, "1", "NX", "EX", cfg.resend_interval_s)
    if err then
        host.log.warn("GetVarifyCode: redis: ", err)
        return { error = errors.Internal, email = email }
    end
    if not fresh then return { error = errors.RateLimited, email = email } end
    local code, is_new = codes.create(email, cfg.code_ttl_s)
    if not code then
        host.log.warn("GetVarifyCode: redis: ", is_new)
        host.redis.call("DEL", rate_key)
        return { error = errors.Internal, email = email }
    end
    local minutes = math.floor(cfg.code_ttl_s / 60)
    local budget = mail_budget(ctx, cfg)
    local sent, merr
    if budget < 1 then
        merr = ("no time left: the caller's deadline leaves %d ms, verify.reply_margin_ms is %d")
            :format(budget + cfg.reply_margin_ms, cfg.reply_margin_ms)
    else
        sent, merr = host.mail.send {
            to = email,
            subject = cfg.mail_subject,
            body = ("Your chathost verification code is %s.\n\nIt is valid for %d minutes. If you "
                .. "did not ask for it, ignore this mail.\n"):format(code, minutes),
            timeout_ms = budget,
        }
    end
    if not sent then
        local why = "mail to " .. mask.email(email) .. " failed: " .. tostring(merr)
        host.log.warn("GetVarifyCode: ", why)
        host.redis.call("DEL", rate_key) -- the user may ask again at once
        if is_new then codes.discard(email) end
        return nil, INTERNAL, why
    end
    host.log.info("verification code ", is_new and "sent" or "re-sent", " to ", mask.email(email))
    return { error = errors.Success, email = email }
end

return M

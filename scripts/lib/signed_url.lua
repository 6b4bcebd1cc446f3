-- lib.signed_url: short-lived links to the resource server's plain HTTP downloads (the web
-- client, curl): "<path>?e=<unix expiry>&s=<hex HMAC-SHA-256 of path "\n" expiry>" under
-- resource.url_secret (config, environment CHATHOST_RESOURCE_URL_SECRET; never logged).
-- The chat role signs (1049 -> 1050), the resource role verifies each request; both hold
-- the same secret. Anyone with the link may fetch the file until it expires: the signer
-- checks who may have it.
local host = require "host"

local M = {}

local function mac(secret, path, expires)
    return host.crypto.hmac_sha256(secret, path .. "\n" .. expires)
end

-- secret() -> resource.url_secret | nil (not configured: nothing can be signed)
function M.secret()
    return host.config.resource.url_secret
end

-- sign(path, ttl_s, now?) -> signed path, expires (unix seconds) | nil, err (no secret).
-- now: the current unix time (default os.time()).
function M.sign(path, ttl_s, now)
    local secret = M.secret()
    if not secret then return nil, "resource.url_secret is not set" end
    local expires = math.floor((now or os.time()) + ttl_s)
    local e = ("%d"):format(expires)
    return path .. "?e=" .. e .. "&s=" .. mac(secret, path, e), expires
end

-- verify(path, e, s, now?) -> true | false, reason ("bad signature" | "expired"). e and s
-- as the query carries them (strings); a signature that does not match path and e is bad
-- whatever e says, and a good one whose e is before now has expired.
function M.verify(path, e, s, now)
    local secret = M.secret()
    if type(path) ~= "string" or type(e) ~= "string" or type(s) ~= "string" or not secret
        or not e:match("^%d+$") or #e > 15 or not s:match("^%x+$") then
        return false, "bad signature"
    end
    if not host.crypto.constant_time_equal(mac(secret, path, e), s:lower()) then
        return false, "bad signature"
    end
    if tonumber(e) < (now or os.time()) then return false, "expired" end
    return true
end

return M

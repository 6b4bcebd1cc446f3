-- gate.request: reads a route's fields from the JSON body in the order of
-- docs/protocol.md §3: first the body and every field's JSON type (1001), then presence
-- and validity field by field in the route's order (1016 naming the first bad field).
-- Fields the route does not know are ignored; JSON null counts as absent.
local host = require "host"
local errors = require "lib.errors"
local validate = require "lib.validate"

local M = {}

local JSON_TYPE = { string = "string", integer = "number" }

-- read(req, fields) -> values | nil, reply
-- fields: array of { name=, kind="string"|"integer", required=bool?, check=fn(v)?,
-- default=? }; check(v) is true when v is valid. An empty string counts as absent.
function M.read(req, fields)
    local body = req.json
    if type(body) ~= "table" or host.json.is_array(body) then -- [] too, not only [1]
        return nil, { error = errors.Error_Json }
    end
    local bad = validate.wrong_type(body, fields, JSON_TYPE)
    if bad then return nil, { error = errors.Error_Json, field = bad } end
    local values = {}
    for _, f in ipairs(fields) do
        local v = body[f.name]
        if v == host.null or v == "" then v = nil end
        if v == nil then
            if f.required then return nil, { error = errors.InvalidParams, field = f.name } end
            v = f.default
        elseif f.check and not f.check(v) then
            return nil, { error = errors.InvalidParams, field = f.name }
        end
        values[f.name] = v
    end
    return values
end

-- gate.trusted_proxies as a set of canonical addresses (the form of req.peer); config does
-- not change while the process runs
local TRUSTED = {}
for _, a in ipairs(host.config_copy().gate.trusted_proxies) do TRUSTED[host.ip(a)] = true end

-- An X-Forwarded-For entry's address in canonical form, without the port some proxies
-- add ("1.2.3.4:5678", "[2001:db8::1]:443"); nil when it is not an address.
local function hop_address(entry)
    local v4 = entry:match("^(%d+%.%d+%.%d+%.%d+):%d+$")
    local v6 = entry:match("^%[([%x:]+)%]:%d+$") or entry:match("^%[([%x:]+)%]$")
    return host.ip(v4 or v6 or entry)
end

-- The client's IP, the identity of its rate-limit counters ("-" if the server had none).
-- From a trusted proxy (gate.trusted_proxies): the rightmost X-Forwarded-For address that
-- is not a trusted proxy itself (what the left part claims was written by the client);
-- an entry there that is not an address stops the walk at the proxy that passed it on.
function M.peer(req)
    local peer = req.peer
    if type(peer) ~= "string" or peer == "" then return "-" end
    if not TRUSTED[peer] then return peer end
    local xff = req.headers["x-forwarded-for"]
    if type(xff) ~= "string" then return peer end
    local hops = {}
    for entry in xff:gmatch("[^,%s]+") do hops[#hops + 1] = entry end
    local client = peer
    for i = #hops, 1, -1 do
        local address = hop_address(hops[i])
        if not address then break end
        client = address
        if not TRUSTED[client] then break end
    end
    return client
end

-- Whether req came through the TLS proxy (tools/tls_proxy.sh, docs/protocol.md §5.6): a
-- trusted proxy that says the client spoke https. Nobody else's X-Forwarded-Proto counts.
function M.via_tls_proxy(req)
    return TRUSTED[req.peer] == true and req.headers["x-forwarded-proto"] == "https"
end

return M

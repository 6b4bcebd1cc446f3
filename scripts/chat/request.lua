-- chat.request: reads a message's fields from its decoded JSON body in the order of
-- docs/protocol.md §5-6: every field's JSON type first (1001), then, field by field,
-- identity (a field naming a uid other than the session's: 1015) and presence/validity
-- (1016 naming the field), and last a field that must name another user naming oneself
-- (1016 naming the field). JSON null counts as absent; unknown fields are ignored.
local host = require "host"
local errors = require "lib.errors"
local validate = require "lib.validate"

local M = {}

-- kind -> the JSON type it must have
local JSON_TYPE = {
    uid = "number", id = "number", cursor = "number", string = "string", text = "string",
    array = "table",
}

-- A row id (thread, message): a positive integer exactly representable in a double.
function M.valid_id(v)
    return type(v) == "number" and v >= 1 and v <= 2 ^ 53 and v == math.floor(v)
end

-- A paging cursor: 0 (from the start) or an id.
local function valid_cursor(v)
    return v == 0 or M.valid_id(v)
end

local function valid_array(v)
    if next(v) == nil then return true end
    return v[1] ~= nil and #v == table.maxn(v)
end

local CHECK = {
    uid = validate.uid, id = M.valid_id, cursor = valid_cursor, array = valid_array,
}

local function check(f, v, uid)
    if v == nil then
        if f.self then return uid end -- identity comes from the session anyway
        if f.required then return nil, { error = errors.InvalidParams, field = f.name } end
        return f.default
    end
    if f.self and v ~= uid then return nil, { error = errors.PermissionDenied, field = f.name } end
    local ok = CHECK[f.kind]
    if f.kind == "text" then ok = function(s) return validate.text(s, f.max) end end
    if f.check then ok = f.check end
    if ok and not ok(v) then return nil, { error = errors.InvalidParams, field = f.name } end
    return v
end

-- read(session, body, fields) -> values | nil, reply
-- fields: array of { name=, kind=, required=?, self=? (must be the session's uid),
-- other=? (must not be the session's uid), max=? (bytes, for kind "text"), check=fn?
-- (replaces the kind's check), default=? }.
function M.read(session, body, fields)
    if type(body) ~= "table" then return nil, { error = errors.Error_Json } end
    local bad = validate.wrong_type(body, fields, JSON_TYPE)
    if bad then return nil, { error = errors.Error_Json, field = bad } end
    local values = {}
    for _, f in ipairs(fields) do
        local v = body[f.name]
        if v == host.null then v = nil end
        local value, reply = check(f, v, session.uid)
        if reply then return nil, reply end
        values[f.name] = value
    end
    for _, f in ipairs(fields) do -- once every field is valid
        if f.other and values[f.name] == session.uid then
            return nil, { error = errors.InvalidParams, field = f.name }
        end
    end
    return values
end

return M

-- resource.wire: reading the resource channel's requests (docs/protocol.md §13.3). The
-- Season 2 client sends sizes as JSON strings in some messages and as numbers in others,
-- so a count is either; a value that is neither a non-negative integer nor a string of
-- digits is an answered error (1016 naming the field), never a crash.
local host = require "host"
local errors = require "lib.errors"
local images = require "lib.images"

local M = {}

M.CHUNK = 32768 -- raw bytes per chunk (the client's MAX_FILE_LEN)

-- count(v) -> a non-negative integer | nil: a JSON number that is one, or a string of 1..15
-- decimal digits.
function M.count(v)
    if type(v) == "number" then
        if v >= 0 and v <= 2 ^ 53 and v == math.floor(v) then return v end
        return nil
    end
    if type(v) == "string" and #v >= 1 and #v <= 15 and v:match("^%d+$") then
        return tonumber(v)
    end
    return nil
end

-- A positive count (seq, ids).
function M.positive(v)
    local n = M.count(v)
    if n and n >= 1 then return n end
    return nil
end

-- echo(body, names) -> a reply table holding the request's fields of those names that are
-- JSON scalars, as they came (the client looks its transfer up by them and copies them
-- into its next chunk); error 0 until a check says otherwise.
function M.echo(body, names)
    local out = { error = errors.Success }
    if type(body) ~= "table" then return out end
    for _, k in ipairs(names) do
        local v = body[k]
        local t = type(v)
        if t == "string" or t == "number" or t == "boolean" then out[k] = v end
    end
    return out
end

-- fail(reply, code, field?) -> reply with that error (and the field it is about)
function M.fail(reply, code, field)
    reply.error = code
    reply.field = field
    return reply
end

-- max_seq(total) -> chunks of a file of total bytes
function M.max_seq(total)
    return math.ceil(total / M.CHUNK)
end

-- decoded_length(text) -> the bytes text decodes to if it is base64 (4-character groups,
-- at most two '=' at the end) | nil; whether every character is of the alphabet is for
-- the decoder to find.
function M.decoded_length(text)
    local n = #text
    if n % 4 ~= 0 then return nil end
    local pad = text:sub(-2) == "==" and 2 or text:sub(-1) == "=" and 1 or 0
    return n / 4 * 3 - pad
end

-- chunk(body, max_file_bytes, undecoded) -> c | nil, code, field
-- c = {name, seq, total, trans, data (raw bytes), md5, offset, max_seq}. Checks, in this
-- order: name (a file name, never a path), seq, total_size, trans_size (1016), the size
-- limit (1101), seq within the file, the data's base64 and its length for that seq, and
-- trans_size = the bytes through this chunk (1104). undecoded: data is not decoded here
-- (c.b64 is the text, c.data nil): its length is told from the text's, and whether it is
-- base64 at all is for the one who decodes it (f:write_base64 as it writes it).
function M.chunk(body, max_file_bytes, undecoded)
    local name = body.name
    if not images.valid_name(name) then return nil, errors.InvalidParams, "name" end
    local seq = M.positive(body.seq)
    if not seq then return nil, errors.InvalidParams, "seq" end
    local total = M.positive(body.total_size)
    if not total then return nil, errors.InvalidParams, "total_size" end
    local trans = M.count(body.trans_size)
    if not trans then return nil, errors.InvalidParams, "trans_size" end
    local md5 = body.md5
    if md5 == nil or md5 == host.null then md5 = "" end
    if type(md5) ~= "string" or #md5 > 32 or not md5:match("^%x*$") then
        return nil, errors.InvalidParams, "md5"
    end
    if total > max_file_bytes then return nil, errors.FileTooLarge, "total_size" end
    local max_seq = M.max_seq(total)
    if seq > max_seq then return nil, errors.BadChunk, "seq" end
    if type(body.data) ~= "string" then return nil, errors.BadChunk, "data" end
    local data, n
    if undecoded then
        n = M.decoded_length(body.data)
    else
        data = host.crypto.base64_decode(body.data)
        n = data and #data
    end
    if not n then return nil, errors.BadChunk, "data" end
    local offset = (seq - 1) * M.CHUNK
    local want = math.min(M.CHUNK, total - offset)
    if n ~= want then return nil, errors.BadChunk, "data" end
    if trans ~= offset + n then return nil, errors.BadChunk, "trans_size" end
    return { name = name, seq = seq, total = total, trans = trans, data = data,
        b64 = undecoded and body.data or nil, md5 = md5:lower(), offset = offset,
        max_seq = max_seq }
end

return M

-- chat.fit: keeps replies within one frame (a body of at most 65535 bytes, docs/protocol.md §5):
-- counts how many leading items of a list fit into a byte budget once encoded as JSON,
-- so a long list is cut (and marked by the caller) instead of producing a frame the
-- length field cannot carry.
local host = require "host"
local settings = require "chat.settings"

local M = {}

M.MAX = settings.MAX_REPLY_BYTES

-- size(value) -> bytes of its JSON encoding
function M.size(value)
    return #host.json.encode(value)
end

-- count(items, budget) -> n, bytes: the first n items, encoded as a JSON array, take
-- `bytes` <= budget.
function M.count(items, budget)
    local used = 2 -- "[]"
    for i, item in ipairs(items) do
        local size = M.size(item) + (i > 1 and 1 or 0)
        if used + size > budget then return i - 1, used end
        used = used + size
    end
    return #items, used
end

-- head(items, n) -> a JSON array of the first n items
function M.head(items, n)
    local out = {}
    for i = 1, n do out[i] = items[i] end
    return host.json.array(out)
end

-- budget(envelope) -> bytes left for lists in a reply whose other fields are envelope
-- (with its lists empty), keeping room for the "..._more" marks
function M.budget(envelope)
    return M.MAX - M.size(envelope) - 64
end

-- paged(rsp, list, items, cursor, key) -> rsp, with rsp[list] = the items of one page
-- (chat.page_size of the page_size + 1 read) that fit into rsp's frame, rsp.load_more
-- (exact: more were read, or cut to fit) and rsp[cursor] = the last item's key (left as
-- it is when the page is empty: the request's cursor).
function M.paged(rsp, list, items, cursor, key)
    rsp[list], rsp.load_more = M.head({}, 0), false
    local n = math.min(#items, settings.page_size)
    local fits = M.count(items, M.budget(rsp))
    if fits < n then n = fits end
    rsp[list], rsp.load_more = M.head(items, n), n < #items
    local last = items[n]
    if last then rsp[cursor] = last[key] end
    return rsp
end

return M

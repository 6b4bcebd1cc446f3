-- resource.migrate: uploads in progress from before the tally (docs/protocol.md §13.6,
-- 2026-12-07). Their progress was the Redis bitmap upload_chunks_<upload_id> (bit seq-1
-- per chunk written) and their partial file held the data alone; at the role's start the
-- bitmap of each upload still in state 0 becomes its partial's tally and is deleted, so
-- that a resume completes it. Uploads that already have a tally (the partial longer than
-- its data) only lose the leftover key.
local host = require "host"
local settings = require "resource.settings"
local store = require("lib.store").at(settings.dir)
local wire = require "resource.wire"

local M = {}

local function key(upload_id) return "upload_chunks_" .. upload_id end

-- The tally of a bitmap (Redis SETBIT order: bit 0 is the first byte's highest) for n
-- chunks -> n bytes, "\1" per chunk marked
local function tally_of(bits, n)
    local t = {}
    for seq = 1, n do
        local byte = bits:byte(math.floor((seq - 1) / 8) + 1) or 0
        local bit = 7 - (seq - 1) % 8
        t[seq] = math.floor(byte / 2 ^ bit) % 2 == 1 and "\1" or "\0"
    end
    return table.concat(t)
end

-- One upload's bitmap into its partial -> true (moved) | false (nothing to move) | nil, err
local function move(row)
    local bits, err = host.redis.call("GET", key(row.upload_id))
    if bits == nil and err then return nil, err end
    if not bits or bits == host.null then return false end
    local path = store:partial_path(row.upload_id)
    local st, serr, code = host.file.stat(path)
    if not st and code ~= "ENOENT" then return nil, serr end
    local bare = st ~= nil and st.size <= row.total_size -- the data alone: no tally yet
    if bare then
        local f, oerr = host.file.open(path, "w")
        if not f then return nil, oerr end
        local ok, werr = f:write(row.total_size, tally_of(bits, wire.max_seq(row.total_size)))
        f:close()
        if not ok then return nil, werr end
    end
    host.redis.call("DEL", key(row.upload_id))
    return bare
end

-- Upload requests wait for the move (resource.upload: M.wait) so that no chunk is counted
-- against a tally still being written: bounded by WAIT_MS, after which they go on.
local WAIT_MS = 30000
local pending -- the promise of the move under way (none: done, or never started)

-- wait(): returns once the move started at this start is over (at once when it is)
function M.wait()
    if pending then pending:wait(WAIT_MS) end
end

-- Set once every upload in progress has been looked at without a failure: later starts
-- skip the move (one GET, instead of a query and a GET per upload in progress).
local DONE_KEY = "resource_tally_migrated"

-- bitmaps([after]): every upload in state 0 with a bitmap left gets its tally (logged);
-- then after() (resource.upload's recover), requests waiting for both
function M.bitmaps(after)
    pending = host.promise() -- (before anything yields: requests from now on wait)
    local ok, err = pcall(function()
        local done = host.redis.call("GET", DONE_KEY)
        if done and done ~= host.null then return end
        M.move_all()
    end)
    if not ok then host.log.warn("uploads from before the tally: ", tostring(err)) end
    if after then
        local aok, aerr = pcall(after)
        if not aok then host.log.warn("after the uploads from before the tally: ", tostring(aerr)) end
    end
    local p = pending
    pending = nil
    p:resolve()
end

function M.move_all()
    local rows, err = host.db.query("SELECT upload_id, total_size FROM upload WHERE state = 0")
    if not rows then
        host.log.warn("uploads from before the tally: ", tostring(err))
        return
    end
    local moved, failed = 0, 0
    for _, row in ipairs(rows) do
        local ok, merr = move(row)
        if ok == nil then
            failed = failed + 1
            host.log.warn("upload ", row.upload_id, ": its bitmap not moved to a tally: ",
                tostring(merr))
        elseif ok then
            moved = moved + 1
        end
    end
    if failed == 0 then host.redis.call("SET", DONE_KEY, "1") end
    if moved > 0 then
        host.log.info(moved, " upload(s) from before the tally: bitmap moved to the partial's",
            " tally")
    end
end

return M

-- resource.migrate: uploads in progress from before the tally (docs/protocol.md §13.6,
-- 2026-12-07). Their progress was the Redis bitmap upload_chunks_<upload_id> (bit seq-1
-- per chunk written) and their partial file held the data alone; at the role's start the
-- bitmap of each upload still in state 0 becomes its partial's tally and is deleted, so
-- that a resume completes it. Uploads that already have a tally (the partial longer than
-- its data) only lose the leftover key. And the objects stored before BLAKE3 named them
-- (2026-12-08) take their BLAKE3 names (rename_old_objects, below).
local host = require "host"
local settings = require "resource.settings"
local store = require("lib.store").at(settings.dir)
local wire = require "resource.wire"
local sql = require "lib.sql"

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

-- ---- objects stored before BLAKE3 (sql/006_blake3.sql, 2026-12-08) ----------------------
-- Until then a complete file was named by its SHA-256; file_object.algo 0 marks those rows.
-- Each such object is hashed again (host.file.blake3, a pool job), linked under its BLAKE3
-- name and synced, and its rows take that name in one transaction (its file_object row
-- again, with algo 1, and every upload that refers to it); its old name and its old row go
-- only rename_grace_ms later (a task per batch: the renames go on meanwhile), so that a
-- request that read its row just before still opens the file (a kept download reads its row
-- again when its object cannot be opened, resource.download). In batches of RENAME_BATCH,
-- in the background, at the role's start; an end of the process anywhere leaves a state
-- that the next start takes up again (the old row is removed last: a rename is done again,
-- each of its steps finding its work done). Until an object is renamed, the same content
-- uploaded anew is stored once more under its BLAKE3 name: the rename finds that name
-- taken, which is the same file's content, syncs it (its link may not be synced yet) and
-- drops its own copy.
local RENAME_BATCH = 100
local RENAMED_KEY = "resource_blake3_renamed" -- set once no row of algo 0 is left

-- The rows of algo 0 after the hash after (hex, in the key's order) -> {hash (hex), size,
-- mime} (at most RENAME_BATCH) | nil, err
local function old_objects(after)
    return host.db.query("SELECT LOWER(HEX(content_hash)) AS hash, size, mime FROM file_object "
        .. "WHERE algo = 0 AND content_hash > UNHEX(?) ORDER BY content_hash LIMIT ?", after,
        RENAME_BATCH)
end

-- link_durable(from, to) -> true | nil, err: to names from's file (made, or there already)
-- and is durable, synced (an fsync: ext4 and XFS commit the journal transaction of its link
-- with it) whoever made it (a completion's link, or this pass's before an end, may not be
-- synced yet); a name made here goes again if its sync fails
local function link_durable(from, to)
    local linked, lerr, lcode = host.file.link(from, to)
    if not linked and lcode ~= "EEXIST" then return nil, lerr end
    local f, err = host.file.open(to, "r")
    local synced
    if f then
        synced, err = f:sync()
        f:close()
    end
    if synced then return true end
    if linked then host.file.unlink(to) end
    return nil, err
end

-- rename(row) -> the new name (true: the row was dropped, nothing refers to its missing
-- file) | nil, err. The old name stays (forget() removes it after the grace).
local function rename(row)
    local old = row.hash
    local path = store:object_path(old)
    local new, err, code = host.file.blake3(path)
    if not new and code == "ENOENT" then -- (its uploads took the new name before an end)
        local refs, rerr = host.db.query("SELECT COUNT(*) AS n FROM upload "
            .. "WHERE content_hash = UNHEX(?)", old)
        if not refs then return nil, rerr end
        if tonumber(refs[1].n) > 0 then return nil, path .. " is missing" end
        local gone, gerr = host.db.exec("DELETE FROM file_object WHERE content_hash = UNHEX(?) "
            .. "AND algo = 0", old)
        if not gone then return nil, gerr end
        return true
    end
    if not new then return nil, err end
    if new ~= old then
        local ok, merr = store:made_dir(store:object_dir(new))
        if not ok then return nil, merr end
        -- (the new name durable before any row says it, as a completion's)
        local linked, lerr = link_durable(path, store:object_path(new))
        if not linked then return nil, lerr end
    end
    local done, terr = sql.tx(function(q)
        if new == old then -- (a row of algo 0 named by its BLAKE3 already)
            sql.must(q.exec("UPDATE file_object SET algo = 1 WHERE content_hash = UNHEX(?)", old))
            return true
        end
        sql.must(q.exec("INSERT IGNORE INTO file_object (content_hash, algo, size, mime) "
            .. "VALUES (UNHEX(?), 1, ?, ?)", new, row.size, row.mime))
        sql.must(q.exec("UPDATE upload SET content_hash = UNHEX(?) WHERE content_hash = UNHEX(?)",
            new, old))
        return true
    end)
    if not done then return nil, terr end
    return new
end

-- forget(old, new) -> true | nil, err: a renamed object's old name and row, after the
-- grace. Its new name is looked at first: a completion of the same content whose sync
-- failed removes the name it linked (lib.store), which may be the one this rename found
-- and its rows now say; then it is linked again from the old name first.
local function forget(old, new)
    local target = store:object_path(new)
    local there, serr, scode = host.file.stat(target)
    if not there and scode ~= "ENOENT" then return nil, serr end
    if not there then
        local linked, lerr = link_durable(store:object_path(old), target)
        if not linked then return nil, lerr end
    end
    local gone, err, code = host.file.unlink(store:object_path(old))
    if not gone and code ~= "ENOENT" then return nil, err end
    return host.db.exec("DELETE FROM file_object WHERE content_hash = UNHEX(?) AND algo = 0", old)
end

-- forget_later(batch) -> a task: after the grace, forget() for each {old=, new=} of batch
-- -> the count forgotten, the count failed
local function forget_later(batch)
    return host.spawn(function()
        host.timer.sleep(settings.rename_grace_ms)
        local forgotten, failed = 0, 0
        for _, b in ipairs(batch) do
            local ok, err = forget(b.old, b.new)
            if ok then
                forgotten = forgotten + 1
            else
                failed = failed + 1
                host.log.warn("object ", b.old, ": its name from before BLAKE3 left: ",
                    tostring(err))
            end
        end
        return forgotten, failed
    end)
end

-- rename_old_objects(): every object stored before BLAKE3 renamed (logged); once none is
-- left, later starts only GET RENAMED_KEY
function M.rename_old_objects()
    local done = host.redis.call("GET", RENAMED_KEY)
    if done and done ~= host.null then return end
    local renamed, failed, after, later = 0, 0, "", {}
    while true do
        local rows, err = old_objects(after)
        if not rows then
            host.log.warn("objects stored before BLAKE3: ", tostring(err))
            failed = failed + 1
            break
        end
        local batch = {}
        for _, row in ipairs(rows) do
            local new, rerr = rename(row)
            if not new then -- (tried again at the next start)
                failed = failed + 1
                host.log.warn("object ", row.hash, " stored before BLAKE3 not renamed: ",
                    tostring(rerr))
            elseif new ~= true and new ~= row.hash then
                batch[#batch + 1] = { old = row.hash, new = new }
            end
        end
        if #batch > 0 then later[#later + 1] = forget_later(batch) end
        if #rows < RENAME_BATCH then break end
        after = rows[#rows].hash
    end
    for _, t in ipairs(later) do
        local ran, forgotten, bad = t:wait()
        if ran then
            renamed, failed = renamed + forgotten, failed + bad
        else
            failed = failed + 1
            host.log.warn("objects stored before BLAKE3: ", tostring(forgotten))
        end
    end
    if renamed > 0 then host.log.info(renamed, " object(s) stored before BLAKE3 renamed") end
    if failed == 0 then host.redis.call("SET", RENAMED_KEY, "1") end
end

return M

-- lib.store: where uploaded files live, the narrow interface the resource role uses
-- (docs/protocol.md §13.6). Local disk under one root:
--   <root>/partial/<upload_id>              an upload in progress, chunks written at their
--                                           offset (a resent chunk rewrites the same bytes)
--   <root>/objects/<2 hex>/<64 hex BLAKE3>  a complete file, named by its content: the same
--                                           picture uploaded twice is stored once
-- Every call is host.file I/O on libuv's threadpool (the loop never blocks, no whole-file
-- buffer). Errors: nil, a sentence, and a kind: "storage" (the disk: full, permission,
-- missing), "size" (the partial is not total bytes long), "type" (not an allowed image).
-- An S3-compatible store would implement the same calls (README "Storage and S3").
local host = require "host"

local M = {}
M.__index = M

-- The first bytes of each image type the role accepts (config resource.image_types).
local MAGIC = {
    { kind = "png", mime = "image/png", test = function(h) return h:sub(1, 8) == "\137PNG\r\n\26\n" end },
    { kind = "jpeg", mime = "image/jpeg", test = function(h) return h:sub(1, 3) == "\255\216\255" end },
    { kind = "gif", mime = "image/gif", test = function(h)
        return h:sub(1, 6) == "GIF87a" or h:sub(1, 6) == "GIF89a" end },
    { kind = "webp", mime = "image/webp", test = function(h)
        return h:sub(1, 4) == "RIFF" and h:sub(9, 12) == "WEBP" end },
    { kind = "bmp", mime = "image/bmp", test = function(h) return h:sub(1, 2) == "BM" end },
}

-- sniff(head, allowed) -> kind, mime | nil: the image type of a file starting with head
-- (its first 12 bytes suffice), if it is one of allowed (a list of kinds).
function M.sniff(head, allowed)
    for _, m in ipairs(MAGIC) do
        if m.test(head) then
            for _, a in ipairs(allowed) do
                if a == m.kind then return m.kind, m.mime end
            end
            return nil
        end
    end
    return nil
end

-- The MIME type of a kind ("png" -> "image/png").
function M.mime(kind)
    for _, m in ipairs(MAGIC) do if m.kind == kind then return m.mime end end
    return "application/octet-stream"
end

-- at(root) -> store: the store under the folder root (an absolute path).
function M.at(root)
    -- made: the objects' folders made by this store (a cache: a commit makes its folder
    -- only the first time, and again when a link finds it gone)
    return setmetatable({ root = root, made = {} }, M)
end

-- Writes to partials under way in this process (one resource process per storage root,
-- README): upload_id -> {n = writes under way, sealed = true from a commit on (after one
-- that named the file, for SEALED_KEEP_MS), idle = the commit's promise}. A commit seals its partial and waits for the writes under
-- way before it hashes; a write to a sealed partial is skipped (every chunk of it is
-- written and tallied already, so it is a resend, and its bytes must not change the file
-- being named by its hash: the object would no longer be its name, and dedupe would hand
-- the changed bytes to whoever uploads the real ones).
local writers = host.keep("lib.store.writers.v1")
local SEAL_WAIT_MS = 30000 -- writes under way at a commit: they end within their I/O, or storage fails
-- A committed partial stays sealed this long: a descriptor another connection opened on it
-- before the commit now writes into the object (the same file, linked), so its late
-- writes are skipped. (Kept uploads are dropped when their row changes; this is the net.)
local SEALED_KEEP_MS = 600000
local committed = host.keep("lib.store.committed.v1") -- {head=, tail=, [i] = {id=, at=}}
committed.head, committed.tail = committed.head or 1, committed.tail or 0

-- Forgets the seals of commits older than SEALED_KEEP_MS (the oldest first).
local function forget_old(now)
    while committed.head <= committed.tail do
        local e = committed[committed.head]
        if now - e.at < SEALED_KEEP_MS then break end
        committed[committed.head] = nil
        committed.head = committed.head + 1
        writers[e.id] = nil -- (sealed since its commit: no write was under way)
    end
end

-- write_guarded(upload_id, fn, ...) -> fn's results, or true when the partial is sealed
-- (the write skipped). fn does the write (host.file I/O on the partial).
function M.write_guarded(upload_id, fn, ...)
    local w = writers[upload_id]
    if w and w.sealed then return true end
    if not w then
        w = { n = 0 }
        writers[upload_id] = w
    end
    w.n = w.n + 1
    local res = { pcall(fn, ...) }
    w.n = w.n - 1
    if w.n == 0 then
        if w.idle then w.idle:resolve() end
        if not w.sealed then writers[upload_id] = nil end
    end
    if not res[1] then error(res[2], 0) end
    return unpack(res, 2, table.maxn(res))
end

-- seal(upload_id) -> true | nil, err: no write to the partial starts from now on, and none
-- is under way any more; unseal(upload_id) lets writes in again (a commit that failed).
local function seal(upload_id)
    local w = writers[upload_id]
    if not w then
        w = { n = 0 }
        writers[upload_id] = w
    end
    w.sealed = true
    while w.n > 0 do
        w.idle = host.promise()
        local ok = w.idle:wait(SEAL_WAIT_MS)
        w.idle = nil
        if not ok and w.n > 0 then return nil, "writes to the partial did not end" end
    end
    return true
end

-- sealed(upload_id) -> true while a commit has the partial sealed (writes to it are skipped)
function M.sealed(upload_id)
    local w = writers[upload_id]
    return w ~= nil and w.sealed == true
end

local function unseal(upload_id)
    local w = writers[upload_id]
    if w and w.n == 0 then writers[upload_id] = nil elseif w then w.sealed = nil end
end

function M:partial_path(upload_id)
    return self.root .. "/partial/" .. tostring(upload_id)
end

-- cut_path(upload_id): the partial's second name while a commit has its tally cut (from
-- just before the cut until remove_cut, after the caller's rows): a process that ends
-- meanwhile leaves a partial of exactly its size without a tally, which only this name
-- tells apart from one still missing pieces (the caller finishes it at its next start)
local function cut_of(partial) return partial .. ".cut" end
function M:cut_path(upload_id)
    return cut_of(self:partial_path(upload_id))
end

-- object_dir(hash_hex) -> the folder of a complete file; object_path(hash_hex) -> its path
-- (hash: its content's BLAKE3-256)
function M:object_dir(hash)
    return self.root .. "/objects/" .. hash:sub(1, 2)
end
function M:object_path(hash)
    return self:object_dir(hash) .. "/" .. hash
end

-- prepare() -> true | nil, err, "storage": creates the root's folders (at start).
function M:prepare()
    for _, d in ipairs({ self.root .. "/partial", self.root .. "/objects" }) do
        local ok, err = host.file.mkdirs(d)
        if not ok then return nil, err, "storage" end
    end
    return true
end

-- prepare_objects() -> true | nil, err: the 256 objects' folders made now (at start, in
-- the background), so that a completion finds its folder made instead of making it; one
-- still missing is made by the commit that needs it.
function M:prepare_objects()
    for i = 0, 255 do
        local ok, err = self:made_dir(("%s/objects/%02x"):format(self.root, i))
        if not ok then return nil, err end
    end
    return true
end

-- check() -> "ok" | "failing: why": a file can be created, written and removed under
-- partial/ (the folder made first if missing), for /healthz.
function M:check()
    local ok, err = self:prepare()
    if not ok then return "failing: " .. tostring(err) end
    local path = self.root .. "/partial/.healthz"
    local f, oerr = host.file.open(path, "w")
    if not f then return "failing: " .. tostring(oerr) end
    local written, werr = f:write(0, "ok")
    f:close()
    host.file.unlink(path)
    if not written then return "failing: " .. tostring(werr) end
    return "ok"
end

-- open_part(upload_id) -> f | nil, err, "storage": the partial file opened for writing
-- (created if missing), for a writer that keeps it open across chunks (f:write(offset,
-- data), f:close()); it must be closed before commit, which links that very file.
function M:open_part(upload_id)
    local path = self:partial_path(upload_id)
    local f, err, code = host.file.open(path, "w")
    if not f and code == "ENOENT" then -- the folder went away: made again once
        local ok, merr = host.file.mkdirs(self.root .. "/partial")
        if not ok then return nil, merr, "storage" end
        f, err = host.file.open(path, "w")
    end
    if not f then return nil, err, "storage" end
    return f
end

-- The tally of a partial file (docs/protocol.md §13.6): an upload of size bytes in n pieces
-- keeps one byte per piece after its data, at size + piece - 1, set (by the job that wrote
-- the piece, host.file's f:write(offset, data, tally)) once the piece's bytes are
-- written; the job reads the n bytes back and answers how many are set, so the writer
-- that completes the set knows it without asking anyone (several connections writing one
-- upload share the file and so its tally; one process per storage root, as the seal). The
-- tally lives and goes with the partial's data (a restart of the process keeps it, the
-- page cache does; removing the partial forgets it), and commit cuts it off.
-- tally(size, piece, n) -> the tally argument of f:write for piece (1..n)
function M.tally(size, piece, n)
    return { at = size + piece - 1, from = size, n = n }
end

-- write_part(upload_id, offset, data[, tally]) -> true[, tallied] | nil, err, "storage"
function M:write_part(upload_id, offset, data, tally)
    return M.write_guarded(upload_id, function()
        local f, err = self:open_part(upload_id)
        if not f then return nil, err, "storage" end
        local ok, werr = f:write(offset, data, tally)
        f:close()
        if not ok then return nil, werr, "storage" end
        return true, werr
    end)
end

-- commit(upload_id, size, allowed[, hashed[, tally_n[, on_named[, ready]]]]) -> {hash=,
-- size=, mime=} | nil, err, kind. The partial must be exactly size bytes (with a tally of tally_n
-- pieces: size + tally_n, every piece tallied, the tally cut off before the hash and the link) and
-- an allowed image by its first bytes; it is hashed (its running hash, or streamed off the
-- loop), linked under its content's name (already there: the same content is kept once)
-- and synced with that name; its partial's names stay: the caller removes its own
-- (unname_partial) while it commits its rows, and its cut_path name (remove_cut) once
-- they are committed. Only after this returns may the upload be called complete. hashed:
-- the partial's writer (open_part,
-- f:hash_start before its first write), closed here: its running hash names the file
-- instead of reading it again when it is still valid for exactly these size bytes of this
-- very file (host.file ends a running hash at any rewrite of hashed bytes, failed write,
-- or write through another handle of the file, so it is the hash of the file's bytes;
-- lib.store's writers are host.file handles only). on_named(obj): called with what the
-- result will be as soon as the file is named, before its link and sync: the caller may
-- prepare its rows then, committing them only after this returns obj. ready() -> true |
-- false | nil, err: asked once the partial is checked, before anything of it changes (the
-- caller's claim on the upload, known by then); not true, the commit ends there (kind
-- "taken" for false, "unready" for nil).
function M:commit(upload_id, size, allowed, hashed, tally_n, on_named, ready)
    local sealed, serr = seal(upload_id)
    if not sealed then
        unseal(upload_id)
        if hashed then hashed:close() end
        return nil, serr, "storage"
    end
    local res = { pcall(self.commit_sealed, self, upload_id, size, allowed, hashed, tally_n,
        on_named, ready) }
    if hashed then hashed:close() end
    if res[1] and res[2] then -- named: it stays sealed a while (SEALED_KEEP_MS)
        local now = host.timer.monotonic()
        committed.tail = committed.tail + 1
        committed[committed.tail] = { id = upload_id, at = now }
        forget_old(now)
    else
        unseal(upload_id) -- failed: a later chunk may try again
    end
    if not res[1] then error(res[2], 0) end
    return unpack(res, 2, 4)
end

-- commit's work once no write to the partial can start or is under way: through the
-- partial's writer (hashed) when there is one, else a handle of its own
function M:commit_sealed(upload_id, size, allowed, hashed, tally_n, on_named, ready)
    local path = self:partial_path(upload_id)
    if hashed then
        return self:commit_open(path, hashed, size, allowed, hashed, tally_n or 0, on_named,
            ready)
    end
    local f, err = host.file.open(path, "rw")
    if not f then return nil, err, "storage" end
    local res = { pcall(self.commit_open, self, path, f, size, allowed, nil, tally_n or 0,
        on_named, ready) }
    f:close()
    if not res[1] then error(res[2], 0) end
    return unpack(res, 2, 4)
end

-- made_dir(dir[, again]) -> true | nil, err: an objects' folder, made unless this store made
-- it already (again: made whatever the cache says)
function M:made_dir(dir, again)
    if self.made[dir] and not again then return true end
    local ok, err = host.file.mkdirs(dir)
    if not ok then return nil, err end
    self.made[dir] = true
    return true
end

-- mark_cut(path) -> true | nil, err: the partial's cut name (cut_of) made, one left by
-- an earlier partial of the id replaced
local function mark_cut(path)
    local cut_name = cut_of(path)
    local marked, merr, mcode = host.file.link(path, cut_name)
    if not marked and mcode == "EEXIST" then
        host.file.unlink(cut_name)
        marked, merr = host.file.link(path, cut_name)
    end
    return marked, merr
end

-- commit_sealed with the partial open (f, "rw" or its writer's "w"; host.file opens it
-- O_NOATIME, so its reads on the loop never touch the inode): checked with its tally in
-- place (only its first size bytes are the content), the tally cut off before the hash is
-- asked for and put back if anything fails before the object's name is kept, so that a
-- failed commit leaves a partial that a resend completes
function M:commit_open(path, f, size, allowed, hashed, tally_n, on_named, ready)
    -- with a tally, the partial's second name that says its tally is cut (cut_of) is made
    -- while it is checked (a pool job), so that the cut can follow the checks at once; the
    -- name goes again if they fail (a cut name beside a partial with its tally is one a
    -- process's end left too early: the next start removes it)
    local cut_name = cut_of(path)
    local marking = tally_n > 0 and host.spawn(mark_cut, path)
    local function unmark()
        if not marking then return end
        local ran, marked = marking:wait()
        marking = nil
        if ran and marked then host.file.unlink(cut_name) end
    end
    local res = { pcall(self.check_open, self, path, f, size, allowed, tally_n) }
    if not (res[1] and res[2]) then
        unmark()
        if not res[1] then error(res[2], 0) end
        return unpack(res, 2, 4)
    end
    local mime = res[3]
    if ready then
        local asked, go, rerr = pcall(ready)
        if not asked then
            unmark()
            error(go, 0)
        end
        if not go then
            unmark()
            return nil, rerr or "completed by another request", go == false and "taken"
                or "unready"
        end
    end
    -- the file becomes its content alone and takes its name, and then one sync makes its
    -- bytes, its size and its name durable together (an fsync commits the journal
    -- transaction of the file's link: ext4, XFS), so that a complete upload's object
    -- cannot lose its name to a power cut; until the link, a failure puts the tally back,
    -- so that a resend completes it then
    local function put_back()
        if tally_n == 0 then return end -- (every piece was tallied: checked above)
        local back, berr = f:write(size, ("\1"):rep(tally_n))
        if not back then -- (the cut's name stays: the next start or the sweeper finishes it)
            host.log.error("the tally of ", path, " not put back: ", tostring(berr))
            return
        end
        host.file.unlink(cut_name)
    end
    -- the cut (a journal update, ~0.3 ms) once the cut's name is there: meanwhile the
    -- writer's running hash takes in the last chunks (host.file hashes a chunk after its
    -- answer)
    if marking then
        local ran, marked, merr = marking:wait()
        marking = nil
        if not ran then error(marked, 0) end
        if not marked then return nil, merr, "storage" end
        local cut, cerr = f:truncate(size)
        if not cut then
            host.file.unlink(cut_name)
            return nil, cerr, "storage"
        end
    end
    -- the running hash of the file's writer when valid for these bytes (the seal: none is
    -- being written); else its first size bytes are read to be hashed
    local hash, herr, why
    if hashed then hash, why = hashed:digest(size, f) end
    if why then host.log.info(path, ": read again to be hashed (", why, ")") end
    if not hash then
        hash, herr = host.file.blake3(path, size)
        if not hash then
            put_back()
            return nil, herr, "storage"
        end
    end
    -- named: the caller's rows may be written meanwhile (committed only after this returns)
    if on_named then on_named({ hash = hash, size = size, mime = mime }) end
    local obj = self:object_path(hash)
    local dir = self:object_dir(hash)
    local ok, merr = self:made_dir(dir)
    if not ok then
        put_back()
        return nil, merr, "storage"
    end
    local linked, lerr, lcode = host.file.link(path, obj)
    if not linked and lcode == "ENOENT" and self:made_dir(dir, true) then -- (gone meanwhile)
        linked, lerr, lcode = host.file.link(path, obj)
    end
    if not linked and lcode ~= "EEXIST" then
        put_back()
        return nil, lerr, "storage"
    end
    -- (EEXIST: the same content is there already, synced by its own commit; but a commit
    -- without a tally, the next start's for one cut short, may find this very file linked
    -- by it before its sync)
    if linked or tally_n == 0 then
        local synced, yerr = f:sync()
        if not synced then -- no object named by bytes that may not be on the disk
            if linked then host.file.unlink(obj) end -- (EEXIST: not this commit's name)
            put_back()
            return nil, yerr, "storage"
        end
    end
    return { hash = hash, size = size, mime = mime }
end

-- check_open(path, f, size, allowed, tally_n) -> true, mime | nil, err, kind: the partial
-- is size bytes and every one of its tally_n pieces is tallied (none: its size is size),
-- and it is an allowed image by its first bytes
function M:check_open(path, f, size, allowed, tally_n)
    -- its size: with a tally, told by reading the tally and one byte more (no stat: a pool
    -- job less); the tally all set
    if tally_n > 0 then
        local tally, terr = f:read(size, tally_n + 1)
        if not tally then return nil, terr, "storage" end
        if #tally ~= tally_n then
            return nil, ("%s is not %d bytes"):format(path, size + tally_n), "size"
        end
        if tally:find("\0", 1, true) then
            return nil, path .. ": a piece is not tallied", "storage"
        end
    else
        local actual, serr = f:size()
        if not actual then return nil, serr, "storage" end
        if actual ~= size then
            return nil, ("%s is %d bytes, not %d"):format(path, actual, size), "size"
        end
    end
    local head, rerr = f:read(0, 16)
    if not head then return nil, rerr, "storage" end
    local kind, mime = M.sniff(head, allowed)
    if not kind then return nil, "not an image of the allowed types", "type" end
    return true, mime
end

-- unname_partial(upload_id) -> true | nil: the partial's own name removed once its commit
-- named it (its cut name stays until the caller's rows are committed: remove_cut); nil: it
-- is still there (logged; remove_partial tries again)
function M:unname_partial(upload_id)
    local path = self:partial_path(upload_id)
    local gone, uerr, ucode = host.file.unlink(path)
    if not gone and ucode ~= "ENOENT" then
        host.log.warn("partial ", path, " left: ", tostring(uerr))
        return nil
    end
    return true
end

-- open_object(hash_hex) -> f | nil, err, "storage": a complete file opened for reading
-- (f:read(offset, n), f:close()), for a reader that keeps it open across chunks
function M:open_object(hash)
    local f, err = host.file.open(self:object_path(hash), "r")
    if not f then return nil, err, "storage" end
    return f
end

-- read(hash_hex, offset, n) -> data ("" past the end) | nil, err, "storage"
function M:read(hash, offset, n)
    local f, err = self:open_object(hash)
    if not f then return nil, err, "storage" end
    local data, rerr = f:read(offset, n)
    f:close()
    if not data then return nil, rerr, "storage" end
    return data
end

-- remove_cut(upload_id): the partial's cut name removed (its commit's rows committed)
function M:remove_cut(upload_id)
    host.file.unlink(self:cut_path(upload_id))
end

-- remove_partial(upload_id) -> true (gone, or was not there) | nil, err, "storage"
function M:remove_partial(upload_id)
    self:remove_cut(upload_id) -- (a name of the same file, or none)
    local ok, err, code = host.file.unlink(self:partial_path(upload_id))
    if ok or code == "ENOENT" then return true end
    return nil, err, "storage"
end

return M

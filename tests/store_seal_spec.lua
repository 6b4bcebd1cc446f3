-- lib.store (docs/protocol.md §13.6): a commit names a partial by its hash only once no
-- write to it is under way, and a write that comes after the seal (a resend: every chunk is
-- in already) is skipped, so an object's bytes always are its name.
local host = require "host"
local store_lib = require "helpers.scripts_lib" "lib.store"

describe("lib.store: commit and writes under way", function()
    local dir, store
    local PNG = "\137PNG\r\n\26\n"

    before_each(function()
        dir = assert(host.fs.mkdtemp("storespec"))
        store = store_lib.at(dir)
        assert(store:prepare())
    end)
    after_each(function() host.fs.rmtree(dir) end)

    it("waits for a write under way, then names what it left; a write after the seal is skipped", function()
        assert(store:write_part(1, 0, PNG .. ("a"):rep(24)))
        local go = host.promise()
        local f = assert(store:open_part(1)) -- a chunk's write through a file opened before
        local writing = host.spawn(function() -- (under way at once: spawn runs to the wait)
            local res = { store.write_guarded(1, function()
                go:wait(10000)
                return f:write(8, ("b"):rep(24))
            end) }
            f:close()
            return unpack(res)
        end)
        -- (spawn runs the commit to its first wait: sealed, waiting for the write)
        local committing = host.spawn(function() return store:commit(1, 32, { "png" }) end)
        local called = false
        assert.is_true(store.write_guarded(1, function() called = true end)) -- sealed: skipped
        assert.is_false(called)
        go:resolve()
        local _, wrote = writing:wait()
        assert.is_true(wrote)
        local _, obj, err = committing:wait()
        assert(obj, err)
        assert.equal(obj.hash, assert(host.file.blake3(store:object_path(obj.hash))))
        local f = assert(host.file.open(store:object_path(obj.hash), "r"))
        assert.equal(PNG .. ("b"):rep(24), f:read(0, 64))
        f:close()
        -- named: a late write through a file opened before (it would write into the
        -- object, the same file) is still skipped
        assert.is_true(store.write_guarded(1, function() called = true return true end))
        assert.is_false(called)
    end)

    it("lets writes in again after a commit that failed", function()
        assert(store:write_part(2, 0, "not an image at all"))
        local obj, _, kind = store:commit(2, 19, { "png" })
        assert.is_nil(obj)
        assert.equal("type", kind)
        assert(store:write_part(2, 0, PNG))
        local f = assert(host.file.open(store:partial_path(2), "r"))
        assert.equal(PNG, f:read(0, 8))
        f:close()
    end)

    describe("the running hash of the partial's writer", function()
        local CHUNK = 4096
        local function chunk(i, fill) return (i == 1 and PNG or "") .. (fill or "a"):rep(CHUNK - (i == 1 and 8 or 0)) end

        -- the BLAKE3 of bytes (through a file: host.file.blake3)
        local function hash_of(bytes)
            host.fs.write(dir .. "/expected", bytes)
            return assert(host.file.blake3(dir .. "/expected"))
        end

        -- the partial of upload id opened by its writer, hashing, with the chunks of the
        -- list {i, fill} written through it in that order
        local function writer(id, list)
            local f = assert(store:open_part(id))
            assert.is_true(f:hash_start(8))
            for _, c in ipairs(list) do
                assert.is_true(store.write_guarded(id, f.write, f, (c[1] - 1) * CHUNK, chunk(c[1], c[2])))
            end
            return f
        end

        -- commit (tally_n: the partial's tally) with host.file.blake3 counted: -> obj, err,
        -- kind, times the file was read
        local function commit(id, size, f, tally_n)
            local real, reads = host.file.blake3, 0
            host.file.blake3 = function(...)
                reads = reads + 1
                return real(...)
            end
            local res = { pcall(store.commit, store, id, size, { "png" }, f, tally_n) }
            host.file.blake3 = real
            assert(res[1], res[2])
            return res[2], res[3], res[4], reads
        end

        -- The object folder of bytes made a link to another file system (a link into it is
        -- refused: EXDEV) -> a function that takes it away again
        local function refusing_folder(bytes)
            local shm = "/dev/shm/storespec-" .. host.crypto.random_hex(8)
            local folder = dir .. "/objects/" .. hash_of(bytes):sub(1, 2)
            assert(host.proc.run({ "sh", "-c", 'mkdir "$1" && ln -s "$1" "$2"', "sh", shm, folder }))
            return function()
                assert(host.proc.run({ "sh", "-c", 'rm -f "$2" && rm -rf "$1"', "sh", shm, folder }))
            end
        end

        it("names the file without reading it again, for chunks in order or not, and closes the writer", function()
            for n, order in ipairs({ { { 1 }, { 2 }, { 3 } }, { { 3 }, { 1 }, { 2 } } }) do
                local id = 20 + n -- (ids of their own: a committed one stays sealed)
                local f = writer(id, order)
                local obj, err, _, reads = commit(id, 3 * CHUNK, f)
                assert(obj, err)
                assert.equal(0, reads)
                assert.equal(hash_of(chunk(1) .. chunk(2) .. chunk(3)), obj.hash)
                assert.equal(obj.hash, host.file.blake3(store:object_path(obj.hash)))
                assert.matches("%(closed%)", tostring(f))
            end
        end)

        it("tells on_named the name before the link, whether the running hash or a read named the file", function()
            -- (before the link: the object is not there yet)
            local function commit_told(id, size, f)
                local told = {}
                local obj = assert(store:commit(id, size, { "png" }, f, nil, function(o)
                    told[#told + 1] = o
                    told.linked = host.fs.kind(store:object_path(o.hash)) ~= nil
                end))
                assert.equal(1, #told)
                assert.same(obj, told[1])
                assert.is_false(told.linked)
            end
            commit_told(33, 2 * CHUNK, writer(33, { { 1 }, { 2 } }))
            assert(store:write_part(34, 0, chunk(1, "n"))) -- no writer: read to be hashed
            commit_told(34, CHUNK)
        end)

        it("names the file by its real bytes once a chunk was written again with other bytes", function()
            local f = writer(23, { { 1 }, { 2 }, { 1, "b" } })
            local obj, err, _, reads = commit(23, 2 * CHUNK, f)
            assert(obj, err)
            assert.equal(1, reads)
            local bytes = chunk(1, "b") .. chunk(2)
            -- (the hash of the first bytes written, chunk(1) .. chunk(2), would name other bytes)
            assert.equal(hash_of(bytes), obj.hash)
            assert.equal(bytes, host.fs.read(store:object_path(obj.hash)))
        end)

        it("names the file by its real bytes when another writer wrote the partial too", function()
            local f = writer(24, { { 1 }, { 2 } })
            assert(store:write_part(24, CHUNK, chunk(2, "c"))) -- another connection's resend
            local obj, err, _, reads = commit(24, 2 * CHUNK, f)
            assert(obj, err)
            assert.equal(1, reads)
            assert.equal(hash_of(chunk(1) .. chunk(2, "c")), obj.hash)
        end)

        it("cuts the tally off before naming the file, and puts it back when the commit fails", function()
            local f = assert(store:open_part(26))
            assert.is_true(f:hash_start(8))
            for i = 1, 2 do
                local ok, n = store.write_guarded(26, f.write, f, (i - 1) * CHUNK, chunk(i),
                    store_lib.tally(2 * CHUNK, i, 2))
                assert.same({ true, i }, { ok, n })
            end
            local obj, err, _, reads = commit(26, 2 * CHUNK, f, 2)
            assert(obj, err)
            assert.equal(0, reads) -- (the running hash named it: the tally is not in it)
            assert.equal(chunk(1) .. chunk(2), host.fs.read(store:object_path(obj.hash)))
            -- the link refused after the tally was cut (the object's folder on another file
            -- system: EXDEV): the commit fails, the tally is back, a later commit succeeds
            assert(store:write_part(27, 0, chunk(1, "x"), store_lib.tally(CHUNK, 1, 1)))
            local restore = refusing_folder(chunk(1, "x"))
            local none, ferr, kind = commit(27, CHUNK, nil, 1)
            assert.is_nil(none)
            assert.equal("storage", kind, ferr)
            assert.matches("cross%-device", ferr)
            assert.equal(chunk(1, "x") .. "\1", host.fs.read(store:partial_path(27)))
            restore()
            local obj2, err2 = commit(27, CHUNK, nil, 1)
            assert(obj2, err2)
            assert.equal(chunk(1, "x"), host.fs.read(store:object_path(obj2.hash)))
            -- the objects' folder not made (a file in its place): failed, the tally back
            assert(store:write_part(36, 0, chunk(1, "y"), store_lib.tally(CHUNK, 1, 1)))
            local folder = dir .. "/objects/" .. hash_of(chunk(1, "y")):sub(1, 2)
            host.fs.rmtree(folder)
            host.fs.write(folder, "not a folder")
            local none3, ferr3, kind3 = commit(36, CHUNK, nil, 1)
            assert.is_nil(none3)
            assert.equal("storage", kind3, ferr3)
            assert.equal(chunk(1, "y") .. "\1", host.fs.read(store:partial_path(36)))
            assert(host.file.unlink(folder))
            assert(commit(36, CHUNK, nil, 1))
            -- and without its tally (one piece short) the size is wrong, as with a byte more
            assert(store:write_part(28, 0, chunk(1)))
            local _, serr, skind = commit(28, CHUNK, nil, 1)
            assert.equal("size", skind, serr)
            assert(store:write_part(35, 0, chunk(1), store_lib.tally(CHUNK, 1, 1)))
            assert(store:write_part(35, CHUNK + 1, "x"))
            _, serr, skind = commit(35, CHUNK, nil, 1)
            assert.equal("size", skind, serr)
        end)

        it("puts the tally back through the writer when the link is refused, and names the file later", function()
            local f = assert(store:open_part(32))
            assert.is_true(f:hash_start(8))
            assert(store.write_guarded(32, f.write, f, 0, chunk(1, "w"), store_lib.tally(CHUNK, 1, 1)))
            local restore = refusing_folder(chunk(1, "w"))
            local none, ferr, kind = commit(32, CHUNK, f, 1)
            assert.is_nil(none)
            assert.equal("storage", kind, ferr)
            assert.matches("%(closed%)", tostring(f))
            assert.equal(chunk(1, "w") .. "\1", host.fs.read(store:partial_path(32)))
            restore()
            local obj, err, _, reads = commit(32, CHUNK, nil, 1)
            assert(obj, err)
            assert.equal(1, reads)
            assert.equal(chunk(1, "w"), host.fs.read(store:object_path(obj.hash)))
        end)

        it("makes an object's folder again when it went away after this store made it", function()
            assert(store:write_part(30, 0, chunk(1, "m")))
            local obj = assert(commit(30, CHUNK))
            host.fs.rmtree(dir .. "/objects/" .. obj.hash:sub(1, 2))
            assert(store:write_part(31, 0, chunk(1, "m")))
            local again, err = commit(31, CHUNK)
            assert(again, err)
            assert.equal(obj.hash, again.hash)
            assert.equal(chunk(1, "m"), host.fs.read(store:object_path(obj.hash)))
            -- the partial's name is the caller's to remove (while it commits its rows)
            assert.equal("file", host.fs.kind(store:partial_path(31)))
            store:unname_partial(31)
            assert.is_nil(host.fs.kind(store:partial_path(31)))
        end)

        it("makes the 256 objects' folders at once, so that a completion finds its own", function()
            assert.is_true(store:prepare_objects())
            for _, d in ipairs({ "00", "7f", "a5", "ff" }) do
                assert.equal("directory", host.fs.kind(dir .. "/objects/" .. d))
                assert.is_true(store.made[dir .. "/objects/" .. d])
            end
        end)

        it("does not name a partial whose size is right but one piece untallied", function()
            -- piece 2's bytes and tally byte, piece 1's bytes without theirs
            assert(store:write_part(29, 0, chunk(1)))
            assert(store:write_part(29, CHUNK, chunk(2), store_lib.tally(2 * CHUNK, 2, 2)))
            local none, err, kind = commit(29, 2 * CHUNK, nil, 2)
            assert.is_nil(none)
            assert.equal("storage", kind)
            assert.matches("a piece is not tallied", err)
            assert.equal(2 * CHUNK + 2, #host.fs.read(store:partial_path(29))) -- left as it was
            -- (its cut name, made while it was checked, gone with the failed check)
            assert.is_nil(host.fs.kind(store:cut_path(29)))
        end)

        it("reads the file when the writer did not write all of it", function()
            assert(store:write_part(25, 0, chunk(1))) -- before the writer: not in its hash
            local f = writer(25, { { 2 } })
            local obj, err, _, reads = commit(25, 2 * CHUNK, f)
            assert(obj, err)
            assert.equal(1, reads)
            assert.equal(hash_of(chunk(1) .. chunk(2)), obj.hash)
        end)
    end)
end)

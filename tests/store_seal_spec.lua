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
        assert.equal(obj.sha256, assert(host.file.sha256(store:object_path(obj.sha256))))
        local f = assert(host.file.open(store:object_path(obj.sha256), "r"))
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
end)

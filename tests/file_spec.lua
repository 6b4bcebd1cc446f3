-- host.file: file I/O on libuv's thread pool (the calling task waits, the loop does not),
-- every failure a sentence plus the errno name, and a bound on open files.
local host = require "host"
local util = require "helpers.util"
local file = host.file

local SHA_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
local SHA_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

describe("host.file", function()
    local dir

    before_each(function() dir = host.fs.mkdtemp("filespec") end)
    after_each(function() host.fs.rmtree(dir) end)

    it("writes at offsets, reads back, knows its size, syncs and closes", function()
        local f = assert(file.open(dir .. "/a", "wx"))
        assert.is_true(f:write(0, "hello"))
        assert.is_true(f:write(10, "world")) -- a hole of zeros between
        assert.equal(15, f:size())
        assert.is_true(f:sync())
        assert.equal("hello\0\0\0\0\0world", f:read(0, 100)) -- shorter near the end
        assert.equal("lo", f:read(3, 2))
        assert.equal("", f:read(15, 10)) -- "" at the end
        assert.equal("", f:read(1000, 10))
        assert.is_true(f:close())
        assert.is_true(f:close()) -- again: nothing
        assert.has_error(function() f:read(0, 1) end, "file is closed")
        assert.equal("hello\0\0\0\0\0world", host.fs.read(dir .. "/a"))
    end)

    it("writes base64 decoded at an offset, and nothing of text that is not base64 (EINVAL)", function()
        local f = assert(file.open(dir .. "/b64", "wx"))
        local bytes = "\0\1\2\255 resource chunk"
        assert.is_true(f:write_base64(3, host.crypto.base64_encode(bytes)))
        assert.equal(3 + #bytes, f:size())
        for _, bad in ipairs({ "QUJD!", "QUJ", "QUJDRA=x", "QQ==QUJD" }) do
            local ok, err, code = f:write_base64(100, bad)
            assert.is_nil(ok)
            assert.equal("EINVAL", code)
            assert.truthy(err:find("not base64", 1, true))
        end
        assert.equal(3 + #bytes, f:size())
        assert(f:close())
        assert.equal("\0\0\0" .. bytes, host.fs.read(dir .. "/b64"))
    end)

    it("reads as base64 what read gives, \"\" at the end", function()
        local bytes = "\0\1\2\255" .. ("x"):rep(100)
        host.fs.write(dir .. "/r64", bytes)
        local f = assert(file.open(dir .. "/r64", "r"))
        for _, at in ipairs({ { 0, 104 }, { 0, 1 }, { 1, 2 }, { 2, 3 }, { 100, 10 }, { 104, 5 }, { 500, 5 } }) do
            assert.equal(host.crypto.base64_encode(f:read(at[1], at[2])), f:read_base64(at[1], at[2]))
        end
        assert.equal("", f:read_base64(104, 5))
        assert(f:close())
    end)

    it("opens \"w\" without truncating, \"wx\" only new files, \"r\" only existing ones", function()
        host.fs.write(dir .. "/b", "0123456789")
        local f = assert(file.open(dir .. "/b", "w"))
        assert(f:write(2, "ab"))
        assert(f:close())
        assert.equal("01ab456789", host.fs.read(dir .. "/b"))
        local none, err, code = file.open(dir .. "/b", "wx")
        assert.is_nil(none)
        assert.equal("EEXIST", code)
        assert.equal("cannot open " .. dir .. "/b: File exists", err)
        none, err, code = file.open(dir .. "/missing", "r")
        assert.is_nil(none)
        assert.equal("ENOENT", code)
        assert.matches("missing: No such file or directory", err, 1, true)
        -- directories are not created
        none, err, code = file.open(dir .. "/x/y", "w")
        assert.equal("ENOENT", code)
        local r = assert(file.open(dir .. "/b", "r"))
        none, err, code = r:write(0, "no")
        assert.is_nil(none)
        assert.equal("EBADF", code)
        assert.matches("^cannot write .*/b: ", err)
        assert(r:close())
        assert.has_error(function() file.open(dir .. "/b", "a") end)
    end)

    it("creates files readable by their owner only", function()
        local f = assert(file.open(dir .. "/p", "wx"))
        assert(f:close())
        local res = assert(host.proc.run({ "stat", "-c", "%a", dir .. "/p" }))
        assert.equal("600", res.stdout:match("%d+"))
    end)

    it("writes concurrent chunks at offsets out of order into the exact file", function()
        local f = assert(file.open(dir .. "/c", "wx"))
        local chunk, n = 32768, 12
        local expected = {}
        for i = 1, n do expected[i] = string.char(64 + i):rep(chunk - 1) .. "\n" end
        local tasks = {}
        for _, i in ipairs({ 12, 3, 7, 1, 11, 5, 9, 2, 10, 4, 8, 6 }) do
            tasks[#tasks + 1] = host.spawn(function() return assert(f:write((i - 1) * chunk, expected[i])) end)
        end
        tasks[#tasks + 1] = host.spawn(function() return assert(f:write((n - 1) * chunk, expected[n])) end) -- a resend
        for _, t in ipairs(tasks) do assert.is_true(t:wait(5000)) end
        assert(f:close())
        local whole = table.concat(expected)
        assert.equal(whole, host.fs.read(dir .. "/c"))
        local res = assert(host.proc.run({ "sha256sum", dir .. "/c" }))
        assert.equal(res.stdout:match("^(%x+)"), file.sha256(dir .. "/c"))
    end)

    it("hashes files with sha256", function()
        host.fs.write(dir .. "/abc", "abc")
        host.fs.write(dir .. "/empty", "")
        assert.equal(SHA_ABC, file.sha256(dir .. "/abc"))
        assert.equal(SHA_EMPTY, file.sha256(dir .. "/empty"))
        local _, err, code = file.sha256(dir .. "/none")
        assert.equal("ENOENT", code)
        assert.matches("^cannot hash ", err)
    end)

    it("makes directories, renames, links, removes and stats", function()
        assert.is_true(file.mkdirs(dir .. "/o/ab/cd"))
        assert.is_true(file.mkdirs(dir .. "/o/ab/cd")) -- exists: fine
        assert.equal("directory", file.stat(dir .. "/o/ab").kind)
        host.fs.write(dir .. "/part", "data")
        local st = assert(file.stat(dir .. "/part"))
        assert.equal("file", st.kind)
        assert.equal(4, st.size)
        assert.is_true(math.abs(st.mtime - os.time()) < 600)
        assert.is_true(file.link(dir .. "/part", dir .. "/o/ab/cd/obj"))
        local ok, err, code = file.link(dir .. "/part", dir .. "/o/ab/cd/obj")
        assert.is_nil(ok)
        assert.equal("EEXIST", code)
        assert.equal("cannot link " .. dir .. "/part to " .. dir .. "/o/ab/cd/obj: File exists", err)
        assert.is_true(file.unlink(dir .. "/part"))
        assert.equal("data", host.fs.read(dir .. "/o/ab/cd/obj"))
        assert.is_true(file.rename(dir .. "/o/ab/cd/obj", dir .. "/moved"))
        local none, _
        none, err, code = file.stat(dir .. "/o/ab/cd/obj")
        assert.is_nil(none)
        assert.equal("ENOENT", code)
        assert.matches("^cannot stat ", err)
        _, _, code = file.unlink(dir .. "/o/ab/cd/obj")
        assert.equal("ENOENT", code)
        _, err, code = file.rename(dir .. "/nothing", dir .. "/x")
        assert.equal("ENOENT", code)
        assert.equal("cannot rename " .. dir .. "/nothing to " .. dir .. "/x: No such file or directory", err)
        -- a path under a regular file (root passes permission checks: ENOTDIR is the
        -- failure a spec can cause)
        _, err, code = file.mkdirs(dir .. "/moved/sub")
        assert.equal("ENOTDIR", code)
        assert.matches("^cannot create .*moved/sub: Not a directory", err)
        _, _, code = file.open(dir .. "/moved/sub", "w")
        assert.equal("ENOTDIR", code)
    end)

    it("refuses to open beyond max_open, and counts a closed or collected file out", function()
        local before = file.stats()
        assert.equal(1024, before.max_open) -- file.max_open's default
        local base = before.open
        file.configure { max_open = base + 2 }
        local a = assert(file.open(dir .. "/m1", "w"))
        local b = assert(file.open(dir .. "/m2", "w"))
        local none, err, code = file.open(dir .. "/m3", "w")
        assert.is_nil(none)
        assert.equal("EMFILE", code)
        assert.matches("file.max_open", err, 1, true)
        assert(a:close())
        local c = assert(file.open(dir .. "/m3", "w"))
        b, c = nil, nil -- collected: closed off the loop
        collectgarbage()
        collectgarbage()
        assert(util.wait_until(function() return file.stats().open == base end, 5000, "the collected files closed"))
        local d = assert(file.open(dir .. "/m4", "w"))
        assert(d:close())
        file.configure { max_open = before.max_open }
        assert.has_error(function() file.configure { max_open = 0 } end)
    end)

    it("reports a full disk as ENOSPC", function()
        local mnt = dir .. "/small"
        assert(file.mkdirs(mnt))
        local res = host.proc.run({ "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt })
        if not res or res.code ~= 0 then
            print("skipped: cannot mount a tmpfs here (" .. tostring(res and res.stderr) .. ")")
            return
        end
        local f = assert(file.open(mnt .. "/big", "wx"))
        local ok, err, code = f:write(0, ("z"):rep(256 * 1024))
        assert(f:close())
        host.proc.run({ "umount", mnt })
        assert.is_nil(ok)
        assert.equal("ENOSPC", code)
        assert.matches("^cannot write .*big: No space left on device", err)
    end)
end)

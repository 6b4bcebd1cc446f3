-- host.file: file I/O on libuv's thread pool (the calling task waits, the loop does not),
-- every failure a sentence plus the errno name, and a bound on open files.
local host = require "host"
local util = require "helpers.util"
local file = host.file

-- BLAKE3-256 of "" and "abc", and of the reference implementation's test inputs (its
-- test_vectors.json: input_len bytes of i % 251) at the lengths where its tree changes shape
-- (one chunk of 1024 bytes, two, many: the SIMD paths that hash several chunks at once)
local B3_EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
local B3_ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
local B3_VECTORS = {
    [1] = "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    [1023] = "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
    [1024] = "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    [1025] = "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    [2048] = "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a",
    [8192] = "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63",
    [31744] = "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47",
    [102400] = "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085",
}
local function vector_input(n)
    local t = {}
    for i = 0, n - 1 do t[i + 1] = string.char(i % 251) end
    return table.concat(t)
end

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

    it("reads what the page cache holds whole (up to the file's end) on the loop, the rest on the pool, the same bytes", function()
        local bytes = {}
        for i = 1, 300 * 1024 / 64 do bytes[i] = ("%063d\n"):format(i) end
        bytes = table.concat(bytes)
        host.fs.write(dir .. "/cached", bytes) -- just written: in the page cache
        local f = assert(file.open(dir .. "/cached", "r"))
        local s0 = file.stats()
        assert.equal(bytes:sub(1001, 33768), f:read(1000, 32768))
        assert.equal(host.crypto.base64_encode(bytes:sub(1, 32768)), f:read_base64(0, 32768))
        local s1 = file.stats()
        if s1.reads_cached == s0.reads_cached and s1.reads_pool == s0.reads_pool + 2 then
            -- (a file system without RWF_NOWAIT for reads: the pool's, the same bytes)
            io.stderr:write(spec_file, ": RWF_NOWAIT reads not supported under ", dir,
                ": the cached path is not tested here\n")
        else
            assert.equal(s0.reads_cached + 2, s1.reads_cached)
            assert.equal(s0.reads_pool, s1.reads_pool)
        end
        -- past the end (a read the end of the file cuts short, not a page the cache lacks):
        -- the loop's too; over 256 KiB: the pool's
        local supported = s1.reads_cached > s0.reads_cached -- (RWF_NOWAIT reads)
        assert.equal(bytes:sub(#bytes - 9), f:read(#bytes - 10, 100))
        assert.equal(bytes:sub(1, 262145), f:read(0, 262145))
        assert.equal(host.crypto.base64_encode(bytes:sub(#bytes - 2)), f:read_base64(#bytes - 3, 10))
        assert.equal("", f:read(#bytes + 5, 10))
        local s2 = file.stats()
        if supported then
            assert.equal(s1.reads_cached + 3, s2.reads_cached)
            assert.equal(s1.reads_pool + 1, s2.reads_pool)
        else
            assert.equal(s1.reads_pool + 4, s2.reads_pool)
        end
        assert.equal(bytes:sub(1, 262144), f:read(0, 262144)) -- exactly 256 KiB: the loop's
        if supported then
            assert.equal(s2.reads_cached + 1, file.stats().reads_cached)
        end
        assert(f:close())
    end)

    it("sets a write's tally byte once the bytes are written and counts the tally's set bytes", function()
        local f = assert(file.open(dir .. "/tally", "wx"))
        local T = function(piece) return { at = 12 + piece - 1, from = 12, n = 3 } end
        assert.same({ true, 1 }, { f:write(4, "efgh", T(2)) })
        assert.same({ true, 2 }, { f:write_base64(8, host.crypto.base64_encode("ijkl"), T(3)) })
        assert.same({ true, 2 }, { f:write(4, "EFGH", T(2)) }) -- again: still two
        assert.same({ true, 3 }, { f:write(0, "abcd", T(1)) })
        assert.equal("abcdEFGHijkl\1\1\1", host.fs.read(dir .. "/tally"))
        -- a tally byte among the bytes written: a script's mistake, or (base64, known once
        -- decoded) EINVAL with nothing tallied
        local ok, err = pcall(f.write, f, 10, "xyz", { at = 11, from = 11, n = 1 })
        assert.is_false(ok)
        assert.matches("outside the bytes written", err)
        for _, bad in ipairs({ { at = 5, from = 6, n = 2 }, { at = 1, from = 0, n = 0 },
            { at = 200, from = 200, n = 33554433 } }) do
            assert.is_false((pcall(f.write, f, 100, "x", bad)))
        end
        local none, why, code = f:write_base64(20, host.crypto.base64_encode("xyz"), { at = 21, from = 21, n = 1 })
        assert.is_nil(none)
        assert.equal("EINVAL", code)
        assert.matches("a tally byte among the bytes to write, nothing written", why)
        assert.equal(15, f:size()) -- (nothing at 20)
        assert(f:close())
        -- two handles of one file: each counts the other's pieces too (a handle rereads only
        -- past the prefix it last saw all set)
        local a = assert(file.open(dir .. "/tally2", "wx"))
        local b = assert(file.open(dir .. "/tally2", "w"))
        local P = function(piece) return { at = 4 + piece - 1, from = 4, n = 4 } end
        assert.same({ true, 1 }, { a:write(0, "a", P(1)) })
        assert.same({ true, 2 }, { b:write(2, "c", P(3)) })
        assert.same({ true, 3 }, { a:write(1, "b", P(2)) })
        assert.same({ true, 4 }, { b:write(3, "d", P(4)) })
        assert.same({ true, 4 }, { a:write(3, "d", P(4)) })
        assert(a:close())
        assert(b:close())
        -- a tally of 32 Mi pieces (1 TiB in 32 KiB chunks), the most there may be
        local big = assert(file.open(dir .. "/tally4", "wx"))
        assert.same({ true, 1 }, { big:write(0, "x", { at = 100, from = 100, n = 33554432 }) })
        assert(big:close())
        local c = assert(file.open(dir .. "/tally3", "wx")) -- a gap first: nothing skipped
        assert.same({ true, 1 }, { c:write(2, "c", P(3)) })
        assert.same({ true, 2 }, { c:write(3, "d", P(4)) })
        assert.same({ true, 3 }, { c:write(0, "a", P(1)) })
        assert(c:close())
    end)

    it("truncates, and a running hash that covered the bytes cut is given up", function()
        local f = assert(file.open(dir .. "/cut", "wx"))
        assert.is_true(f:hash_start(8))
        assert.is_true(f:write(0, "0123456789"))
        assert.is_true(f:truncate(10)) -- nothing hashed is cut: still valid
        assert.equal(file.blake3(dir .. "/cut"), f:digest(10))
        assert.is_true(f:truncate(4))
        assert.equal(4, f:size())
        assert.equal("0123", host.fs.read(dir .. "/cut"))
        local none, why = f:digest(4)
        assert.is_nil(none)
        assert.matches("truncated", why)
        assert(f:close())
        -- a tally cut by another handle is counted anew (not from the prefix seen before)
        local a = assert(file.open(dir .. "/cut2", "wx"))
        local b = assert(file.open(dir .. "/cut2", "w"))
        local P = function(piece) return { at = 2 + piece - 1, from = 2, n = 2 } end
        assert.same({ true, 1 }, { a:write(0, "a", P(1)) })
        assert.same({ true, 2 }, { a:write(1, "b", P(2)) })
        assert.is_true(b:truncate(2))
        assert.same({ true, 1 }, { a:write(1, "b", P(2)) })
        assert(a:close())
        assert(b:close())
        -- and the BLAKE3 of a file's first n bytes
        host.fs.write(dir .. "/abc6", "abcdef")
        assert.equal(B3_ABC, file.blake3(dir .. "/abc6", 3))
        assert.equal(B3_EMPTY, file.blake3(dir .. "/abc6", 0))
        local short, _, code = file.blake3(dir .. "/abc6", 7)
        assert.is_nil(short)
        assert.equal("ERANGE", code)
    end)

    it("opens \"w\" without truncating, \"wx\" only new files, \"r\" and \"rw\" only existing ones", function()
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
        local rw = assert(file.open(dir .. "/b", "rw")) -- read and written, not truncated
        assert(rw:write(0, "xy"))
        assert.equal("xy", rw:read(0, 2))
        assert(rw:close())
        assert.equal("xyab456789", host.fs.read(dir .. "/b"))
        none, err, code = file.open(dir .. "/missing", "rw") -- not created
        assert.equal("ENOENT", code)
        assert.is_nil(host.fs.kind(dir .. "/missing"))
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
    end)

    it("lets another file's write in after 16 of a busy file's (one writer thread)", function()
        -- a first write of 64 MiB keeps the writer busy while 23 more of that file and then
        -- one of another file are queued: the other file waits for the rest of that
        -- batch of 16, not for all 24
        local a = assert(file.open(dir .. "/busy", "wx"))
        local b = assert(file.open(dir .. "/other", "wx"))
        local first, done, tasks = ("b"):rep(64 * 1024 * 1024), {}, {}
        for i = 1, 24 do
            tasks[i] = host.spawn(function()
                assert(a:write(i == 1 and 0 or #first + i, i == 1 and first or "a"))
                done[#done + 1] = "a"
            end)
        end
        tasks[25] = host.spawn(function()
            assert(b:write(0, "x"))
            done[#done + 1] = "b"
        end)
        for _, t in ipairs(tasks) do assert.is_true(t:wait(20000)) end
        local at
        for i, who in ipairs(done) do if who == "b" then at = i end end
        assert.is_true(at <= 17, "the other file's write finished " .. at .. "th")
        assert(a:close())
        assert(b:close())
    end)

    it("hashes files with BLAKE3", function()
        host.fs.write(dir .. "/abc", "abc")
        host.fs.write(dir .. "/empty", "")
        assert.equal(B3_ABC, file.blake3(dir .. "/abc"))
        assert.equal(B3_EMPTY, file.blake3(dir .. "/empty"))
        for n, want in pairs(B3_VECTORS) do
            host.fs.write(dir .. "/v" .. n, vector_input(n))
            assert.equal(want, file.blake3(dir .. "/v" .. n), n .. " bytes")
        end
        local _, err, code = file.blake3(dir .. "/none")
        assert.equal("ENOENT", code)
        assert.matches("^cannot hash ", err)
    end)

    describe("a running hash (f:hash_start, f:digest)", function()
        local CHUNK = 32768
        local function chunk(i, fill) return (fill or string.char(64 + i)):rep(CHUNK - 1) .. "\n" end

        -- f with a running hash (max_held), chunks i of the list written in that order,
        -- each awaited (order = the order their hashing sees them)
        local function written(name, order, max_held)
            local f = assert(file.open(dir .. "/" .. name, "wx"))
            assert.is_true(f:hash_start(max_held or 8))
            for _, i in ipairs(order) do assert.is_true(f:write((i - 1) * CHUNK, chunk(i))) end
            return f
        end

        it("is the file's BLAKE3 for chunks in order, and none for another size", function()
            local f = written("in", { 1, 2, 3, 4 })
            assert.equal(file.blake3(dir .. "/in"), f:digest(4 * CHUNK))
            assert.equal(file.blake3(dir .. "/in"), f:digest(4 * CHUNK)) -- again: the same
            local none, why = f:digest(3 * CHUNK)
            assert.is_nil(none)
            assert.matches("not the size", why)
            assert(f:close())
        end)

        it("is the reference BLAKE3 of writes of uneven sizes, the last written first", function()
            local bytes = vector_input(102400)
            local f = assert(file.open(dir .. "/vec", "wx"))
            assert.is_true(f:hash_start(8))
            local cuts = { 0, 1000, 1025, 33792, 65536, 102400 } -- (not on 1024-byte chunks)
            local tasks = {}
            for i = #cuts - 1, 1, -1 do
                local from, to = cuts[i], cuts[i + 1]
                tasks[#tasks + 1] = host.spawn(function()
                    return assert(f:write(from, bytes:sub(from + 1, to)))
                end)
            end
            for _, t in ipairs(tasks) do assert.is_true(t:wait(5000)) end
            assert.equal(B3_VECTORS[102400], f:digest(#bytes))
            assert(f:close())
        end)

        it("holds 0 to 1024 writes before their turn, as asked; more is a script's mistake", function()
            local f = assert(file.open(dir .. "/held", "wx"))
            for _, bad in ipairs({ -1, 1025 }) do
                local ok, err = pcall(f.hash_start, f, bad)
                assert.is_false(ok)
                assert.matches("must be 0..1024", err)
            end
            assert.is_true(f:hash_start(1024))
            assert(f:close())
            local g = written("held0", { 2, 1 }, 0) -- none may wait: chunk 2 first gives it up
            local none, why = g:digest(2 * CHUNK)
            assert.is_nil(none)
            assert.matches("more writes before their turn", why)
            assert(g:close())
        end)

        it("is the file's BLAKE3 for chunks finished out of order, held until their turn", function()
            local f = written("out", { 3, 2, 5, 1, 4 }, 3) -- at most 3 held: 3, 2, 5
            assert.equal(file.blake3(dir .. "/out"), f:digest(5 * CHUNK))
            assert(f:close())
            -- and submitted at once (a file's writes run in the order submitted)
            local g = assert(file.open(dir .. "/pool", "wx"))
            assert.is_true(g:hash_start(8))
            local tasks = {}
            for i = 1, 8 do
                tasks[i] = host.spawn(function() return assert(g:write((i - 1) * CHUNK, chunk(i))) end)
            end
            for _, t in ipairs(tasks) do assert.is_true(t:wait(5000)) end
            assert.equal(file.blake3(dir .. "/pool"), g:digest(8 * CHUNK))
            assert(g:close())
        end)

        it("sees a file's writes one at a time, in the order they were submitted", function()
            -- 64 chunks submitted at once, none to be held: one finished before its turn
            -- would give the hash up
            local g = assert(file.open(dir .. "/strand", "wx"))
            assert.is_true(g:hash_start(0))
            local tasks = {}
            for i = 1, 64 do
                tasks[i] = host.spawn(function() return assert(g:write_base64((i - 1) * CHUNK,
                    host.crypto.base64_encode(chunk(i)))) end)
            end
            for _, t in ipairs(tasks) do assert.is_true(t:wait(5000)) end
            assert.equal(file.blake3(dir .. "/strand"), g:digest(64 * CHUNK))
            assert(g:close())
            -- writes of the same bytes submitted at once: the last one submitted stays
            local h = assert(file.open(dir .. "/last", "wx"))
            for i = 1, 64 do
                tasks[i] = host.spawn(function() return assert(h:write(0, chunk(i % 26 + 1))) end)
            end
            for _, t in ipairs(tasks) do assert.is_true(t:wait(5000)) end
            assert.equal(chunk(64 % 26 + 1), h:read(0, CHUNK))
            assert(h:close())
        end)

        it("is the hash of what was written base64-decoded", function()
            local f = assert(file.open(dir .. "/b64", "wx"))
            assert.is_true(f:hash_start(8))
            assert.is_true(f:write_base64(CHUNK, host.crypto.base64_encode(chunk(2))))
            assert.is_nil(f:write_base64(0, "not base64!")) -- nothing written: nothing changes
            assert.is_true(f:write_base64(0, host.crypto.base64_encode(chunk(1))))
            assert.equal(file.blake3(dir .. "/b64"), f:digest(2 * CHUNK))
            assert(f:close())
        end)

        -- a base64 write is answered once its bytes are written, before the hash takes them
        -- in (on the writer, after): a digest asked for meanwhile waits for them
        it("waits for writes answered before the hash has taken them in", function()
            local big = ("0123456789abcdef"):rep(3 * 1024 * 1024) -- 48 MiB: ~30 ms to hash
            local b64 = host.crypto.base64_encode(big)
            local f = assert(file.open(dir .. "/later", "wx"))
            assert.is_true(f:hash_start(8))
            assert.is_true(f:write_base64(0, b64))
            assert.equal(file.blake3(dir .. "/later"), f:digest(#big, f))
            assert.equal(file.blake3(dir .. "/later"), f:digest(#big)) -- nothing waits now
            assert(f:close())
            -- the handle closed while a digest waits: that digest says so
            local g = assert(file.open(dir .. "/closed", "wx"))
            assert.is_true(g:hash_start(8))
            assert.is_true(g:write_base64(0, b64))
            local asked = host.spawn(function() return g:digest(#big) end)
            assert(g:close())
            local ran, none, why = asked:wait(5000)
            assert.is_true(ran)
            assert.is_nil(none)
            assert.matches("the file was closed", why)
        end)

        it("hashes a waiting digest's writes before other files' writes (one writer)", function()
            -- this file's write, then 200 of another file's, queued at once: once it is
            -- answered, its digest does not wait for the rest of the other's writes (below
            -- 16 waiting to be hashed, writes go first)
            local big = ("0123456789abcdef"):rep(512 * 1024) -- 8 MiB
            local b64 = host.crypto.base64_encode(big)
            -- -> the other file's writes done before the digest was asked, while it waited
            local function round(n)
                local f = assert(file.open(dir .. "/urgent" .. n, "wx"))
                assert.is_true(f:hash_start(8))
                local other = assert(file.open(dir .. "/other_many" .. n, "wx"))
                local piece, done = ("p"):rep(256 * 1024), 0
                local written = host.spawn(function() return f:write_base64(0, b64) end)
                local tasks = {}
                for i = 1, 200 do
                    tasks[i] = host.spawn(function()
                        assert(other:write((i - 1) * #piece, piece))
                        done = done + 1
                    end)
                end
                assert.same({ true, true }, { written:wait(20000) })
                -- (this task may resume late, some of the other's writes done by then: only
                -- those done while the digest waits count)
                local before = done
                local digest = f:digest(#big)
                local during = done - before
                for _, t in ipairs(tasks) do assert.is_true(t:wait(20000)) end
                assert(f:close())
                assert(other:close())
                assert.equal(file.blake3(dir .. "/urgent" .. n), digest)
                return before, during
            end
            -- (a round where every other write was done before the digest was asked tells
            -- nothing: another one then)
            local before, during
            for n = 1, 3 do
                before, during = round(n)
                if before < 200 then break end
            end
            assert.is_true(before < 200, "every write of the other file was done before the digest")
            assert.is_true(during * 2 < 200 - before, ("%d of the other file's %d writes left "
                .. "were done while the digest waited"):format(during, 200 - before))
        end)

        it("is given up by a truncate below writes answered and not hashed yet", function()
            local big = ("0123456789abcdef"):rep(3 * 1024 * 1024) -- 48 MiB: ~30 ms to hash
            local f = assert(file.open(dir .. "/cut_backlog", "wx"))
            assert.is_true(f:hash_start(8))
            assert.is_true(f:write_base64(0, host.crypto.base64_encode(big)))
            assert.is_true(f:truncate(1000)) -- (its hash still to come)
            local none, why = f:digest(#big)
            assert.is_nil(none)
            assert.matches("given up: the file was truncated", why)
            assert(f:close())
        end)

        it("answers at most 16 writes before hashing them, whatever waits (one writer)", function()
            -- a first write of 48 MiB keeps the writer busy while 63 more are queued: it
            -- answers writes ahead of their hashing until 16 wait to be hashed, then hashes
            -- first; the hash is the file's all the same
            local big = ("0123456789abcdef"):rep(3 * 1024 * 1024)
            local f = assert(file.open(dir .. "/backlog", "wx"))
            assert.is_true(f:hash_start(8))
            local tasks = {}
            for i = 1, 64 do
                local data = i == 1 and big or chunk(i)
                tasks[i] = host.spawn(function()
                    return assert(f:write_base64(i == 1 and 0 or #big + (i - 2) * CHUNK,
                        host.crypto.base64_encode(data)))
                end)
            end
            for _, t in ipairs(tasks) do assert.is_true(t:wait(20000)) end
            assert.equal(file.blake3(dir .. "/backlog"), f:digest(#big + 63 * CHUNK))
            assert.equal(16, file.stats().hash_backlog_max)
            assert(f:close())
        end)

        it("decodes chunk after chunk into the same few buffers, not one of its own each", function()
            -- (each chunk's buffer malloc'd on the writer and freed on the loop: glibc gave
            -- the heap's top back and took it again, page faults every chunk)
            local f = assert(file.open(dir .. "/kept_buffers", "wx"))
            assert.is_true(f:hash_start(8))
            local made = file.stats().decoded_made
            for i = 1, 200 do
                local b64 = host.crypto.base64_encode(chunk(i % 50 + 1))
                assert.is_true(f:write_base64((i - 1) * CHUNK, b64))
            end
            assert.equal(file.blake3(dir .. "/kept_buffers"), f:digest(200 * CHUNK))
            assert(f:close())
            assert.is_true(file.stats().decoded_made - made <= 17, "at most one per write held")
            assert.is_true(file.stats().decoded_kept >= 1)
        end)

        it("keeps 32 decoding buffers at most, however many were in use at once", function()
            -- 40 files' chunks decoded while the loop is busy (none given back meanwhile):
            -- 40 buffers in use at once; given back, 32 are kept and the rest freed
            local fs, tasks = {}, {}
            for i = 1, 40 do fs[i] = assert(file.open(dir .. "/many" .. i, "wx")) end
            local before = file.stats()
            for i = 1, 40 do -- (each write submitted in its task's first slice: no yield between)
                local f, b64 = fs[i], host.crypto.base64_encode(chunk(i))
                tasks[i] = host.spawn(function()
                    local ok = assert(f:write_base64(0, b64))
                    assert(f:close())
                    return ok
                end)
            end
            local t0 = host.timer.monotonic()
            while host.timer.monotonic() - t0 < 500 do end -- (the writer decodes them all)
            for _, t in ipairs(tasks) do assert.is_true(t:wait(5000)) end
            local after = file.stats()
            assert.is_true(after.decoded_made - before.decoded_made >= 40 - before.decoded_kept,
                "40 in use at once")
            assert.equal(32, after.decoded_kept)
        end)

        it("is given up for good by a resend, the same bytes or others, hashed or held", function()
            for _, case in ipairs({
                { 1, 2, 2 },        -- the same bytes again, into the hashed prefix
                { 1, 3, 3, 2 },     -- onto a held chunk
            }) do
                local f = written("re", case)
                local none, why = f:digest(#case == 3 and 2 * CHUNK or 3 * CHUNK)
                assert.is_nil(none)
                assert.matches("given up: bytes hashed or held were written again", why)
                assert(f:close())
                assert(file.unlink(dir .. "/re"))
            end
            -- other bytes: the file is not what was hashed first
            local f = written("other", { 1, 2 })
            assert.is_true(f:write(100, "other bytes"))
            assert.is_nil(f:digest(2 * CHUNK))
            assert.is_true(f:write(2 * CHUNK, chunk(3))) -- and stays given up
            assert.is_nil(f:digest(3 * CHUNK))
            assert(f:close())
        end)

        it("is given up when more would wait their turn than it may hold, or a write fails", function()
            local f = written("many", { 2, 3, 4 }, 2)
            assert.is_true(f:write(0, chunk(1)))
            assert.matches("given up: more writes before their turn", select(2, f:digest(4 * CHUNK)))
            assert(f:close())
            host.fs.write(dir .. "/ro", "")
            local r = assert(file.open(dir .. "/ro", "r"))
            assert.is_true(r:hash_start(8))
            assert.equal(B3_EMPTY, r:digest(0))
            assert.is_nil(r:write(0, "abc")) -- EBADF: failed
            local none, why = r:digest(0)
            assert.is_nil(none)
            assert.matches("given up: a write failed", why)
            assert(r:close())
        end)

        it("is given up by a write through another handle of the file, not of another file", function()
            local f = written("two", { 1, 2 })
            local elsewhere = assert(file.open(dir .. "/elsewhere", "wx"))
            assert.is_true(elsewhere:write(0, "x")) -- another file: no matter
            assert(elsewhere:close())
            assert.equal(file.blake3(dir .. "/two"), f:digest(2 * CHUNK))
            local g = assert(file.open(dir .. "/two", "w"))
            assert.is_true(g:write(0, chunk(1))) -- the same bytes even
            assert.matches("given up: another handle of the file wrote", select(2, f:digest(2 * CHUNK)))
            assert(g:close())
            assert(f:close())
            -- a write through another handle under way when the hash starts: given up too
            local h = assert(file.open(dir .. "/busy", "wx"))
            local k = assert(file.open(dir .. "/busy", "w"))
            local writing = host.spawn(function() return k:write(0, chunk(1)) end) -- (submitted)
            assert.is_true(h:hash_start(8))
            assert.is_true(select(2, writing:wait(5000)))
            assert.matches("busy at its start", select(2, h:digest(CHUNK)))
            -- and none starts while a job of its own handle is under way
            local own = host.spawn(function() return k:write(0, chunk(1)) end)
            local started, err = k:hash_start(8)
            assert.is_nil(started)
            assert.matches("jobs are under way", err)
            own:wait(5000)
            assert(h:close())
            assert(k:close())
        end)

        it("names only the file of the handle it is asked about", function()
            local f = written("this", { 1 })
            local same = assert(file.open(dir .. "/this", "r"))
            host.fs.write(dir .. "/that", chunk(1))
            local other = assert(file.open(dir .. "/that", "r"))
            assert.equal(file.blake3(dir .. "/this"), f:digest(CHUNK, same))
            local none, why = f:digest(CHUNK, other)
            assert.is_nil(none)
            assert.matches("not the same file", why)
            local plain = assert(file.open(dir .. "/that", "r"))
            assert.matches("f:hash_start", select(2, plain:digest(CHUNK)))
            for _, h in ipairs({ f, same, other, plain }) do assert(h:close()) end
        end)
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

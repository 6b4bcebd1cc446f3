-- host.tcp over TLS (tls = true): the stream of tests/tcp_spec.lua inside TLS, against a
-- Python TLS peer (tests/helpers/tls_peer.py) whose certificate a CA made here signed. The
-- certificate is checked (CA, name or IP), the handshake fails clearly and within the
-- connect's timeout, every read mode works across TLS records and the read buffer's bound,
-- and closing says close_notify.
local host = require "host"
local tls = require "helpers.tls"
local util = require "helpers.util"

describe("tcp client over TLS", function()
    local dir, ca, peer

    -- connect(port, opts?) -> conn | nil, err: TLS to opts.host or 127.0.0.1 trusting
    -- opts.ca_file, else ca, else (opts.system) the system's CAs
    local function connect(port, opts)
        opts = opts or {}
        opts.tls = true
        if opts.ca_file == nil and not opts.system then opts.ca_file = ca.pem end
        return host.tcp.connect(opts.host or "127.0.0.1", port, opts)
    end

    local function fds() return #assert(host.fs.list("/proc/self/fd")) end

    -- connect_fails(port, opts?) -> err: a connect that fails, and leaves no socket behind
    -- (closed at once, or on the next loop turn)
    local function connect_fails(port, opts)
        local before = fds()
        local c, err = connect(port, opts)
        assert.is_nil(c)
        assert(util.wait_until(function() return fds() == before end, 1000,
            "the descriptor count to return to " .. before))
        return err
    end

    setup(function()
        dir = assert(host.fs.mkdtemp("tcp_tls"))
        ca = tls.ca(dir, "ca")
        peer = tls.peer(tls.cert(dir, ca, "peer"))
    end)

    teardown(function()
        peer.stop()
        host.fs.rmtree(dir)
    end)

    it("carries a frame and serves every read mode", function()
        local c = assert(connect(peer.port))
        assert(c:send("E"))
        assert(c:send_frame(1005, '{"uid":1}'))
        local id, body = c:read_frame()
        assert.equal(1005, id)
        assert.equal('{"uid":1}', body)
        assert(c:send("key=value;rest"))
        assert.equal("key", c:read_until("="))
        assert.equal("value", c:read_exactly(5))
        assert.equal(";rest", c:read())
        c:close()
    end)

    it("carries a 1 MiB frame both ways across many TLS records", function()
        local c = assert(connect(peer.port, { frame = "u16u32" }))
        assert(c:send("E"))
        local big = host.crypto.random_hex(4096):rep(128) -- 64 records of 16 KiB at least
        assert(c:send_frame(1041, big))
        local id, body = c:read_frame()
        assert.equal(1041, id)
        assert.equal(#big, #body)
        assert.equal(big, body)
        c:close()
    end)

    it("keeps to max_buffer: decrypted data waits in the stream until the script reads", function()
        local c = assert(connect(peer.port, { max_buffer = 4096 }))
        assert(c:send("E"))
        local blob = host.crypto.random_hex(4096):rep(16)
        assert(c:send(blob))
        local got = {}
        local n = 0
        while n < #blob do
            local part = assert(c:read(65536))
            -- at most the bound and one TLS record (16 KiB) decrypted past it
            assert.is_true(#part <= 4096 + 16384, "read " .. #part)
            got[#got + 1] = part
            n = n + #part
        end
        assert.equal(blob, table.concat(got))
        c:close()
    end)

    it("checks a DNS name (sent as SNI) or an IP address against the certificate", function()
        local c = assert(connect(peer.port, { host = "localhost" })) -- the name localhost
        c:close()
        c = assert(connect(peer.port, { server_name = "localhost" }))
        c:close()
        local other = tls.peer(tls.cert(dir, ca, "named", "DNS:chat.example.com"))
        c = assert(connect(other.port, { server_name = "chat.example.com" }))
        c:close()
        local none, err = connect(other.port) -- dialled 127.0.0.1: not in the certificate
        assert.is_nil(none)
        assert.equal("tls: certificate problem: not made out to 127.0.0.1", err)
        other.stop()
    end)

    it("checks the name dialled by default", function()
        local name = tls.loopback_name()
        if not name then
            pending("no name in /etc/hosts maps to 127.0.0.1 besides localhost")
            return
        end
        local named = tls.peer(tls.cert(dir, ca, "dialled", "DNS:" .. name))
        local c = assert(connect(named.port, { host = name }))
        assert(c:send("Ex"))
        assert.equal("x", c:read(1))
        c:close()
        local none, err = connect(peer.port, { host = name }) -- localhost's certificate
        assert.is_nil(none)
        assert.equal("tls: certificate problem: not made out to " .. name, err)
        named.stop()
    end)

    it("refuses a certificate made out to another name", function()
        local c, err = connect(peer.port, { server_name = "chat.example.com" })
        assert.is_nil(c)
        assert.equal("tls: certificate problem: not made out to chat.example.com", err)
    end)

    it("refuses a certificate no trusted CA signed (ca_file, or the system's CAs)", function()
        local other = tls.ca(dir, "other")
        local c, err = connect(peer.port, { ca_file = other.pem })
        assert.is_nil(c)
        assert.matches("^tls: certificate problem: unable to get local issuer certificate", err)
        c, err = connect(peer.port, { system = true })
        assert.is_nil(c)
        assert.matches("^tls: certificate problem: ", err)
    end)

    it("reads a CA file again once it changed (contexts are kept per file and version)", function()
        local path = dir .. "/rotating.pem"
        local other = tls.ca(dir, "other2")
        assert(host.fs.write(path, assert(host.fs.read(ca.pem))))
        local c = assert(connect(peer.port, { ca_file = path }))
        c:close()
        c = assert(connect(peer.port, { ca_file = path })) -- (the kept context)
        c:close()
        assert(host.fs.write(path, assert(host.fs.read(other.pem)))) -- rotated to another CA
        local c2, err = connect(peer.port, { ca_file = path })
        assert.is_nil(c2)
        assert.matches("^tls: certificate problem: unable to get local issuer certificate", err)
        assert(host.fs.write(path, assert(host.fs.read(ca.pem))))
        c = assert(connect(peer.port, { ca_file = path }))
        c:close()
    end)

    it("fails cleanly against a peer that speaks no TLS", function()
        local plain = tls.peer("plain")
        assert.matches("^tls: handshake failed: ", connect_fails(plain.port))
        plain.stop()
    end)

    it("closes the socket of a handshake whose task was cancelled (a handler timed out)", function()
        local stall = tls.server("stall")
        local before = fds()
        local started = host.promise()
        local srv = assert(host.chat.serve { address = "127.0.0.1:0", name = "tlscancel",
            handler_timeout_ms = 200, handlers = function() return { messages = {
                [1] = function()
                    started:resolve(true)
                    return { c = connect(stall.port, { timeout_ms = 600000 }) ~= nil }
                end,
            } } end })
        local chat_client = require "helpers.chat_client"
        local cl = assert(chat_client.connect(srv.port))
        assert(cl:send(1, {}))
        assert(started:wait(5000))
        local r, rerr = cl:wait_push(2, 5000)
        assert.same({ error = 1019 }, r, tostring(rerr)) -- the handler was cut off
        cl:close()
        srv:close()
        -- the chat server's sockets and the handshake's: all gone, not waiting for 600 s
        assert(util.wait_until(function() return fds() == before end, 3000,
            "the descriptor count to return to " .. before))
        stall.stop()
    end)

    it("times a handshake that never completes out within the connect's timeout", function()
        local stall = tls.server("stall")
        assert.equal("tls: handshake timed out", connect_fails(stall.port, { timeout_ms = 200 }))
        stall.stop()
    end)

    -- the peer's log: how each of its connections ended
    local function ends() return select(2, peer.proc:output():gsub("end clean", "")) end

    it("says close_notify on close, and on shutdown while reading goes on", function()
        local before = ends()
        local c = assert(connect(peer.port))
        assert(c:send("Ex"))
        assert.equal("x", c:read(1))
        c:close()
        assert(util.wait_until(function() return ends() == before + 1 end, 5000,
            "the peer to see our close_notify: " .. peer.proc:output()))
        c = assert(connect(peer.port))
        assert(c:send("Eabc"))
        assert.is_true(c:shutdown())
        assert.equal("abc", c:read_all()) -- the peer ends the socket after our close_notify
        c:close()
        assert(util.wait_until(function() return ends() == before + 2 end, 5000,
            "the peer to see the shutdown's close_notify"))
    end)

    it("reports the peer's close_notify and a cut connection as closed", function()
        local c = assert(connect(peer.port))
        assert(c:send("C"))
        assert.equal("bye", c:read_until("\r\n"))
        -- the end, and what came before it
        assert.same({ nil, "closed", "partial" }, { c:read_until("\r\n") })
        assert.is_true(c:closed())
        c:close()
        c = assert(connect(peer.port))
        assert(c:send("R"))
        assert.equal("bye", c:read_all())
        c:close()
    end)

    it("refuses bad options and an unreadable CA file", function()
        local ok, err = pcall(host.tcp.connect, "127.0.0.1", peer.port, { tls = "yes" })
        assert.is_false(ok)
        assert.matches("tls must be a boolean", err)
        ok, err = pcall(host.tcp.connect, "127.0.0.1", peer.port, { tls = true, ca_file = 5 })
        assert.is_false(ok)
        assert.matches("ca_file must be a string", err)
        local c, why = connect(peer.port, { ca_file = dir .. "/missing.pem" })
        assert.is_nil(c)
        assert.matches("^tls: cannot read the CA file .*missing%.pem", why)
    end)
end)

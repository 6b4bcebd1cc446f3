-- host.tcp: an outgoing TCP stream with buffered, mode-based reads and timeouts, tested
-- against a real server (a Python echo/scripted peer).
local host = require "host"
local util = require "helpers.util"
local tls = require "helpers.tls"

-- A peer that sends `greeting`, then echoes what it reads until the client closes.
local PEER = [[
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
def serve(c):
    mode = c.recv(1)
    if mode == b"E":
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
    elif mode == b"S":   # silent: read nothing, never answer
        threading.Event().wait(30)
    elif mode == b"C":   # send a line, then close
        c.sendall(b"bye\r\npartial"); c.close(); return
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
]]

describe("tcp client", function()
    local peer, port

    setup(function()
        local dir = assert(host.fs.mkdtemp("tcp"))
        assert(host.fs.write(dir .. "/peer.py", PEER))
        peer = assert(host.proc.spawn({ "/usr/bin/python3", dir .. "/peer.py" }, { stdout = "capture" }))
        while not port do
            local out = peer:output()
            port = tonumber(out:match("^(%d+)\n"))
            if not port then host.timer.sleep(20) end
        end
    end)

    teardown(function()
        peer:kill("KILL")
        peer:wait()
    end)

    it("connects, sends and reads in every mode", function()
        local c = assert(host.tcp.connect("127.0.0.1", port))
        assert(c:send("E"))
        assert(c:send("line one\r\nline two\r\nABCDEFGH"))
        assert.equal("line one", c:read_until("\r\n"))
        assert.equal("line two", c:read_until("\r\n"))
        assert.equal("ABCD", c:read_exactly(4))
        assert.equal("EF", c:read(2))
        assert.equal("GH", c:read())
        c:close()
    end)

    it("moves a megabyte both ways", function()
        local c = assert(host.tcp.connect("127.0.0.1", port))
        assert(c:send("E"))
        local blob = ("0123456789abcdef"):rep(65536)
        local reader = host.spawn(function() return c:read_exactly(#blob) end)
        assert(c:send(blob))
        local ok, back = reader:wait()
        assert.is_true(ok)
        assert.equal(#blob, #back)
        assert.equal(blob, back)
        c:close()
    end)

    it("times out a read that gets nothing", function()
        local c = assert(host.tcp.connect("127.0.0.1", port))
        assert(c:send("S"))
        local v, err = c:read(10, 50)
        assert.is_nil(v)
        assert.equal("timeout", err)
        c:close()
    end)

    it("reports the peer closing, with what arrived before", function()
        local c = assert(host.tcp.connect("127.0.0.1", port))
        assert(c:send("C"))
        assert.equal("bye", c:read_until("\r\n"))
        local v, err, partial = c:read_until("\r\n")
        assert.is_nil(v)
        assert.equal("closed", err)
        assert.equal("partial", partial)
        assert.is_true(c:closed())
        c:close()
    end)

    it("reads everything until the peer closes", function()
        local c = assert(host.tcp.connect("127.0.0.1", port))
        assert(c:send("C"))
        assert.equal("bye\r\npartial", c:read_all())
        c:close()
    end)

    it("dials a host name, resolved off the loop", function()
        local name = tls.loopback_name()
        if not name then
            pending("no name in /etc/hosts maps to 127.0.0.1 besides localhost")
            return
        end
        local c = assert(host.tcp.connect(name, port))
        assert(c:send("Eby name\n"))
        assert.equal("by name", c:read_until("\n"))
        c:close()
    end)

    it("says which name it could not resolve", function()
        local c, err = host.tcp.connect("no-such-host.invalid", port)
        assert.is_nil(c)
        assert.matches("^cannot resolve no%-such%-host%.invalid: ", err)
    end)

    it("fails to connect to a closed port with an error", function()
        local c, err = host.tcp.connect("127.0.0.1", 1)
        assert.is_nil(c)
        assert.matches("refused", err)
    end)

    it("closes a connect that timed out (no socket is left behind)", function()
        -- a listener whose accept queue is full: the kernel drops the next SYN
        local dir = assert(host.fs.mkdtemp("tcp_full"))
        assert(host.fs.write(dir .. "/full.py", [[
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
print(s.getsockname()[1], flush=True)
time.sleep(30)
]]))
        local full = assert(host.proc.spawn({ "/usr/bin/python3", dir .. "/full.py" }, { stdout = "capture" }))
        local fport
        while not fport do
            fport = tonumber(full:output():match("^(%d+)\n"))
            if not fport then host.timer.sleep(20) end
        end
        local first = assert(host.tcp.connect("127.0.0.1", fport)) -- fills the queue
        local function fds() return #assert(host.fs.list("/proc/self/fd")) end
        local before = fds()
        local c, err = host.tcp.connect("127.0.0.1", fport, { timeout_ms = 200 })
        assert.is_nil(c)
        assert.equal("timeout", err)
        -- the connecting socket's descriptor is closed (at once, or on the next loop turn)
        assert(util.wait_until(function() return fds() == before end, 1000,
            "the descriptor count to return to " .. before))
        first:close()
        full:kill("KILL")
        full:wait()
        host.fs.rmtree(dir)
    end)

    it("raises when used after close", function()
        local c = assert(host.tcp.connect("127.0.0.1", port))
        c:close()
        assert.has_error(function() c:send("x") end, "closed")
    end)

    -- make asan: LeakSanitizer fails the run if the connection was allocated before the
    -- option that raised was read.
    it("raises on a bad option without leaking a connection", function()
        local ok, err = pcall(host.tcp.connect, "127.0.0.1", 1, { max_buffer = "big" })
        assert.is_false(ok)
        assert.matches("number expected", err)
    end)
end)

-- The TLS proxy (tools/tls_proxy.sh, docs/protocol.md §5.6): a private nginx with a
-- certificate of a CA made here, in front of a gate and two chat servers whose configs say
-- tls_proxy.enabled. A login over https names the proxy's addresses (wss://, TLS ports,
-- tls = true); users log in and chat over TLS TCP and over wss through it, the terminal
-- client too (chat and images over host.tcp's TLS); plain HTTP and plain frames
-- are refused on its ports; the certificate is ours, TLS 1.2+ with forward secrecy only;
-- per-IP limits see the client, not the proxy; a renewed certificate is served after a
-- reload; and a browser page logs in and chats through it. Skipped, saying why, where nginx
-- (with its stream module) is missing.
local host = require "host"
local tls = require "helpers.tls_proxy"
local browser = require "helpers.browser"
local cluster = require "helpers.chat_cluster"
local res = require "helpers.res_client"
local rc = require "helpers.res_cluster"
local chat_client = require "helpers.chat_client"
local client_system = require "helpers.client_system"
local util = require "helpers.util"
local password = dofile(host.root .. "/scripts/lib/password.lua")
local redis = host.redis

local ok, why = tls.probe()
if not ok then
    io.stderr:write(spec_file, ": SKIPPED: nginx unavailable: ", why, "\n")
    pending("the TLS proxy: skipped, nginx unavailable: " .. why)
    return
end

-- The SHA-256 fingerprint of a PEM certificate, lower-case hex.
local function fingerprint(pem)
    local r = assert(host.proc.run({ "openssl", "x509", "-in", pem, "-noout", "-fingerprint",
        "-sha256" }))
    return (r.stdout:match("=([%x:]+)")):gsub(":", ""):lower()
end

describe("the TLS proxy", function()
    timeout(60000)
    local sys

    setup(function() sys = tls.start() end)
    teardown(function() if sys then sys:stop() end end)

    -- login(user, env?) -> the /user_login reply's JSON through the proxy
    local function login(u, env)
        local r = sys:client("https", sys.files.ca, sys.gate_url .. "/user_login",
            host.json.encode { email = u.email, passwd = password.xor(u.password) }, env)
        assert.equal(200, r.status, r.body)
        return assert(host.json.decode(r.body))
    end

    -- The chat server (sys.chats entry) whose proxied TCP port is port.
    local function chat_by_public_port(port)
        for _, c in ipairs(sys.chats) do
            if tostring(c.inst.public_port) == tostring(port) then return c end
        end
    end

    it("answers a login over https with the proxy's addresses: TLS ports and wss", function()
        local u = tls.user("Tls.pw1")
        local r = login(u)
        assert.equal(0, r.error)
        assert.equal(u.uid, r.uid)
        assert.equal("127.0.0.1", r.host)
        local c = chat_by_public_port(r.port)
        assert.truthy(c, "a proxied chat port: " .. tostring(r.port))
        assert.equal(r.port, r.chatport)
        assert.equal(("wss://127.0.0.1:%d/"):format(c.inst.public_ws_port), r.wsurl)
        assert.equal("127.0.0.1", r.reshost)
        assert.equal(tostring(sys.ports.res), r.resport)
        assert.is_true(r.tls)
    end)

    it("keeps the plain addresses for a login on the gate's own port (Qt and terminal clients)", function()
        local u = tls.user("Plain.pw1")
        local body = host.json.encode { email = u.email, passwd = password.xor(u.password) }
        local gate = "http://127.0.0.1:" .. sys.gate.port .. "/user_login"
        -- straight from a client; and from one (not the trusted proxy's address) claiming
        -- an X-Forwarded-Proto of its own
        for _, env in ipairs({ {}, { TLS_CLIENT_SOURCE = "127.0.0.2" } }) do
            local r = sys:client("http", gate, body, env.TLS_CLIENT_SOURCE and "X-Forwarded-Proto: https"
                or "X-Plain: 1", env)
            assert.equal(200, r.status)
            local j = assert(host.json.decode(r.body))
            assert.equal(0, j.error, r.body)
            local c
            for _, chat in ipairs(sys.chats) do
                if tostring(chat.port) == j.port then c = chat end
            end
            assert.truthy(c, "a chat server's own port: " .. r.body)
            assert.equal("127.0.0.1", j.host)
            assert.equal(("ws://127.0.0.1:%d/"):format(c.inst.ws_port), j.wsurl)
            assert.equal(tostring(sys.ports.res_plain), j.resport)
            assert.is_nil(j.tls) -- the reply of before: only the fields a plain client knows
        end
    end)

    it("carries a chat login and messages over TLS TCP and over wss", function()
        local a, b = tls.user("Alice.pw1"), tls.user("Bob.pw22")
        local thread_id = cluster.befriend(a, b)
        local ra, rb = login(a), login(b)
        local out = sys:client("talk", sys.files.ca, host.json.encode {
            a = { uid = a.uid, token = ra.token, tcp = { ra.host, tonumber(ra.port) } },
            b = { uid = b.uid, token = rb.token, ws = rb.wsurl, origin = sys.gate_url },
            thread_id = thread_id, text = "through the proxy" })
        assert.same({ a_login = 0, b_login = 0, a_sent = 0, b_sent = 0,
            b_got = "through the proxy from a", a_got = "through the proxy from b" }, out)
    end)

    it("lets the terminal client log in over https, chat and send an image over TLS", function()
        local a, b = tls.user("Term.pw11"), tls.user("Term.pw22")
        cluster.befriend(a, b)
        local bc = cluster.login(sys.chats[1].port, b) -- bob on a chat server's plain port
        local loader, handlers = client_system.load_client()
        local c = handlers.api.new { gate = sys.gate_url, ca_file = sys.files.ca }
        assert(c:login(a.email, a.password))
        -- the chat connection is the proxy's TLS port, which speaks nothing in clear
        assert.truthy(chat_by_public_port(c.server:match(":(%d+)$")), c.server)
        assert(c:send(b.uid, "from the terminal over TLS"))
        local push = assert(bc:wait_push(1019))
        assert.equal("from the terminal over TLS", push.chat_datas[1].content)
        local png = host.root .. "/tests/fixtures/images/noise.png"
        local sent = assert(c:send_image(b.uid, png)) -- the resource channel, through the proxy
        local dir = assert(host.fs.mkdtemp("tlsterm"))
        assert(c:save_image(sent.message_id, dir .. "/back.png"))
        assert.equal(assert(host.file.blake3(png)), assert(host.file.blake3(dir .. "/back.png")))
        c:close()
        loader:close()
        bc:close()
        host.fs.rmtree(dir)
    end)

    it("hands out https download links that work through the proxy", function()
        local a, b = tls.user("Img.pw11"), tls.user("Img.pw22")
        local thread_id = cluster.befriend(a, b)
        local name = rc.name()
        local id = rc.image_message(a, b, thread_id, name)
        local data = res.png(50000)
        -- uploaded on the resource role's own port (the resource session a chat login opens)
        assert(redis.call("SET", "restoken_" .. a.uid, a.token, "EX", 600))
        local c = assert(res.connect(sys.ports.res_plain))
        assert.equal(0, res.upload_image(c, { uid = a.uid, token = a.token, name = name,
            data = data, message_id = id, receiver = b.uid }).error)
        c:close()
        local r = login(a)
        local out = sys:client("frames", sys.files.ca, r.host, r.port, host.json.encode {
            { 1005, { uid = a.uid, token = r.token } }, { 1049, { message_id = id } } })
        assert.equal(0, out[1].error)
        assert.equal(0, out[2].error, host.json.encode(out[2]))
        local prefix = ("https://127.0.0.1:%d/files/%d?"):format(sys.ports.res_http, id)
        assert.equal(prefix, out[2].url:sub(1, #prefix))
        local path = assert(host.fs.mkdtemp("tlsimg")) .. "/img.png"
        assert(host.fs.write(path, data))
        local got = sys:client("https", sys.files.ca, out[2].url)
        assert.equal(200, got.status)
        assert.equal(#data, got.length)
        local sum = assert(host.proc.run({ "sha256sum", path })) -- (the helper's digest of the body)
        assert.equal(sum.stdout:match("^(%x+)"), got.sha256)
        host.fs.rmtree(path:match("^(.*)/"))
    end)

    it("refuses plain HTTP on its https port and plain frames on its TLS ports", function()
        local r = sys:client("plain", "127.0.0.1", sys.ports.gate)
        assert.truthy(r.answer:find("^HTTP/1%.1 400"), r.answer)
        assert.truthy(r.answer:find("plain HTTP request was sent to HTTPS port", 1, true), r.answer)
        -- nothing reached the gate: its answers are JSON
        assert.falsy(r.answer:find('"error"', 1, true), r.answer)
        r = sys:client("plain", "127.0.0.1", sys.chats[1].inst.public_port)
        assert.equal("", r.answer)
    end)

    it("presents our certificate on every port, TLS 1.2 or later, forward secrecy only", function()
        local ours = fingerprint(sys.files.cert)
        local ports = { sys.ports.gate, sys.ports.res, sys.ports.res_http }
        for _, c in ipairs(sys.chats) do
            ports[#ports + 1] = c.inst.public_port
            ports[#ports + 1] = c.inst.public_ws_port
        end
        for _, port in ipairs(ports) do
            local r = sys:client("cert", sys.files.ca, "127.0.0.1", port)
            assert.equal(ours, r.sha256, "port " .. port .. ": " .. tostring(r.error))
            assert.truthy(r.version == "TLSv1.2" or r.version == "TLSv1.3", r.version)
        end
        -- RSA key exchange (no forward secrecy): an nginx default, not ours
        local r = sys:client("weak", "127.0.0.1", sys.ports.gate)
        assert.is_true(r.refused, host.json.encode(r))
    end)

    it("counts a failed login against the client's address, not the proxy's", function()
        redis.call("DEL", "rate:login_ip:127.0.0.1", "rate:login_ip:127.0.0.2")
        local u = tls.user("Right.pw1")
        u.password = "Wrong.pw1"
        local r = login(u, { TLS_CLIENT_SOURCE = "127.0.0.2" })
        assert.equal(1009, r.error)
        -- the gate trusts the proxy's X-Forwarded-For (gate.trusted_proxies: 127.0.0.1)
        assert.equal(1, redis.call("EXISTS", "rate:login_ip:127.0.0.2"))
        assert.equal(0, redis.call("EXISTS", "rate:login_ip:127.0.0.1"))
    end)

    it("serves a renewed certificate after tools/tls_proxy.sh reload", function()
        local before = fingerprint(sys.files.cert)
        local renewed = tls.ca(assert(host.fs.mkdtemp("tlsrenew")))
        -- the same CA signs the renewal (a fresh CA's would not verify: ca.pem is the old)
        local r = assert(host.proc.run({ "openssl", "x509", "-req", "-in", renewed.csr,
            "-CA", sys.files.ca, "-CAkey", sys.files.ca_key, "-CAcreateserial", "-days", "2",
            "-extfile", renewed.ext, "-out", sys.files.cert }))
        assert.equal(0, r.code, r.stderr)
        assert(host.fs.write(sys.files.key, assert(host.fs.read(renewed.key))))
        local after = fingerprint(sys.files.cert)
        assert.are_not.equal(before, after)
        r = sys:tool("reload")
        assert.equal(0, r.code, r.stderr)
        -- the old worker may take one more handshake before it hears of the reload
        assert(util.wait_until(function()
            return sys:client("cert", sys.files.ca, "127.0.0.1", sys.ports.gate).sha256 == after
        end, 10000, "the renewed certificate", 100))
    end)

    it("refuses a config without tls_proxy.enabled, and stops only its own nginx", function()
        local dir = assert(host.fs.mkdtemp("tlstool"))
        assert(host.fs.write(dir .. "/config.lua", "return {}\n"))
        local env = { CHATHOST_CONFIG = dir .. "/config.lua", CHATHOST_BIN = util.bin(),
            CHATHOST_TLS_PROXY = false }
        local r = assert(host.proc.run({ host.root .. "/tools/tls_proxy.sh", "conf", dir .. "/p" }, { env = env }))
        assert.equal(2, r.code)
        assert.matches("tls_proxy%.enabled is not set", r.stderr)
        -- a pid file naming another process (a pid reused after a kill -9): left alone
        local other = assert(host.proc.spawn({ "sleep", "60" }))
        assert(host.fs.write(dir .. "/p/nginx.pid", other.pid .. "\n"))
        r = assert(host.proc.run({ host.root .. "/tools/tls_proxy.sh", "stop", dir .. "/p" }, { env = env }))
        assert.equal(0, r.code, r.stderr)
        -- (stop waits for what it signalled to end: this one is still there)
        assert.equal(0, assert(host.proc.run({ "kill", "-0", tostring(other.pid) })).code)
        other:kill("KILL")
        other:wait()
        host.fs.rmtree(dir)
    end)

    describe("in a browser", function()
        local b
        local bok, bwhy = browser.probe()
        if not bok then
            io.stderr:write(spec_file, ": SKIPPED the browser test: ", bwhy, "\n")
            pending("in a browser: skipped, headless Chromium unavailable: " .. bwhy)
            return
        end

        setup(function() b = browser.start { flags = { "--ignore-certificate-errors" } } end)
        teardown(function() if b then b:stop() end end)

        it("logs in over https and chats over wss", function()
            local alice, bob = tls.user("Alice.pw1"), tls.user("Bob.pw22")
            cluster.befriend(alice, bob)
            -- bob on a chat server's own plain port (as a local client would)
            local bc = cluster.login(sys.chats[1].port, bob)
            local p = b:page("alice", { width = 1100, height = 760 })
            p:go(sys.gate_url .. "/")
            p:fill("login-email", alice.email)
            p:fill("login-password", alice.password)
            p:click("login-submit")
            -- an https page may only open wss:// (a ws:// URL is blocked as mixed content)
            p:wait("document.body.dataset.state === 'online'", "alice online")
            assert.equal("https:", p:eval("location.protocol"))
            p:wait(("document.querySelector('#friends li[data-uid=\"%d\"]') !== null"):format(bob.uid),
                "bob among alice's friends")
            p:eval(("document.querySelector('#friends li[data-uid=\"%d\"]').click()"):format(bob.uid))
            p:fill("send-text", "hello over wss")
            p:click("send-submit")
            local push = assert(bc:wait_push(1019))
            assert.equal("hello over wss", push.chat_datas[1].content)
            assert(bc:request(1017, { touid = alice.uid, thread_id = push.thread_id,
                text_array = { { content = "hello back", unique_id = host.crypto.random_hex(8) } } }))
            p:wait_text("messages", "hello back")
            p:shot("web-chat-tls.png")
            bc:close()
        end)
    end)
end)

-- Roles on separate hosts: gate, status, two chat servers, Redis and MariaDB each in a
-- network namespace of its own on a private bridge (helpers.netns, 198.18.0.0/15, no route
-- out), started with the config an operator writes per machine (helpers.netns_cluster).
-- Users log in through the gate over the network and chat across hosts; a chat host's
-- link is cut and its users move to the other; every host's packets are delayed. Skipped,
-- saying why, where the machine does not allow namespaces. Where the kernel has no netem
-- (tc's sch_netem), the cluster runs with a delay relay in front of every store and server
-- (helpers.netns_cluster start{relays = true}) and the latency comes from the relays.
local host = require "host"
local netns = require "helpers.netns"
local ncluster = require "helpers.netns_cluster"
local chat_client = require "helpers.chat_client"
local util = require "helpers.util"

local netns_ok, netns_why, netem_ok, netem_why = netns.probe()

if not netns_ok then
    io.stderr:write(spec_file, ": SKIPPED: network namespaces unavailable: ", netns_why, "\n")
    pending("roles on separate hosts: skipped, network namespaces unavailable: " .. netns_why)
    return
end

describe("helpers.netns", function()
    local DEAD = 4194400 -- above the kernel's largest pid: no process has it

    local function exists(kind, name)
        local argv = kind == "netns" and { "ip", "netns", "list" } or { "ip", "-o", "link", "show" }
        local out = assert(host.proc.run(argv)).stdout
        return out:find(name, 1, true) ~= nil
    end

    local function sh(cmd)
        local r = assert(host.proc.run({ "sh", "-c", cmd }))
        assert.equal(0, r.code, r.stderr)
    end

    it("removes what a crashed run left, and nothing of a live run", function()
        local dead_ns, live_ns = netns.PREFIX .. DEAD .. "-gate", netns.PREFIX .. host.proc.pid() .. "-keep"
        sh(("ip netns add %s && ip netns add %s && ip link add chtb%d type bridge"
            .. " && ip link add chv%dx1 type veth peer name chp%dx1"):format(dead_ns, live_ns,
            DEAD, DEAD, DEAD))
        local left = assert(host.proc.spawn({ "ip", "netns", "exec", dead_ns, "sleep", "60" }))
        local ok, err = pcall(function()
            assert(util.wait_until(function()
                local r = host.proc.run({ "ip", "netns", "identify", tostring(left.pid) })
                return r and r.stdout:find(dead_ns, 1, true)
            end, 5000, "sleep to run in " .. dead_ns))
            netns.cleanup_stale()
            assert.truthy(left:wait(5000)) -- killed, not left running in a lost namespace
            assert.falsy(exists("netns", dead_ns))
            assert.falsy(exists("link", "chtb" .. DEAD))
            assert.falsy(exists("link", "chv" .. DEAD .. "x1"))
            assert.truthy(exists("netns", live_ns))
        end)
        if not left.exited then left:kill("KILL") left:wait() end
        host.proc.run({ "sh", "-c", ("ip netns del %s; ip netns del %s; ip link del chtb%d;"
            .. " ip link del chv%dx1"):format(dead_ns, live_ns, DEAD, DEAD) })
        assert(ok, err)
    end)
end)

describe("roles on separate hosts", function()
    timeout(60000) -- the setup starts a whole system (MariaDB's install-db is most of it)
    local cl

    setup(function()
        if not netem_ok then
            io.stderr:write(spec_file, ": no netem (", netem_why, "): latency from delay relays\n")
        end
        cl = ncluster.start { relays = not netem_ok }
    end)

    teardown(function() if cl then cl:stop() end end)

    -- Logs user in through the gate until the status role sends the user to chat server
    -- `want` (least loaded, ties round-robin: a few tries at most) -> the gate's reply
    local function gate_login_to(user, want)
        local last
        for _ = 1, 6 do
            last = cl:gate_login(user)
            assert.equal(0, last.error)
            if cl:chat_at(last) == want then return last end
            host.timer.sleep(ncluster.CHAT_REPORT_MS)
        end
        error(("user %d never sent to %s (last: %s)"):format(user.uid, want,
            host.json.encode(last)))
    end

    -- A chat login with the gate's reply -> client
    local function chat_login(user, reply)
        local c = assert(chat_client.connect(tonumber(reply.port), reply.host))
        local r = assert(c:request(1005, { uid = user.uid, token = reply.token }))
        assert.equal(0, r.error)
        return c
    end

    -- text(client, from, to, thread, content) -> the 1018 ack (error 0 asserted)
    local function text(c, from, to, thread, content)
        local ack = assert(c:request(1017, { fromuid = from.uid, touid = to.uid,
            thread_id = thread, text_array = { { content = content,
                unique_id = host.crypto.random_hex(8) } } }))
        assert.equal(0, ack.error)
        return ack
    end

    -- The whole history of thread as one client reads it (1029, every page).
    local function history(c, thread)
        local out, cursor = {}, 0
        repeat
            local page = assert(c:request(1029, { thread_id = thread, message_id = cursor }))
            assert.equal(0, page.error)
            for _, d in ipairs(page.chat_datas) do out[#out + 1] = d end
            cursor = page.last_message_id
        until not page.load_more
        return out
    end

    it("has no route out of its own network", function()
        for _, name in ipairs(ncluster.HOSTS) do
            local routes = cl.net:routes(name)
            for line in routes:gmatch("[^\n]+") do
                -- the host's /24 and the kernel's local and broadcast routes, nothing else
                local ok = line:find(cl.net.prefix .. "0/24 dev eth0", 1, true) == 1
                    or line:match("^local 127%.") or line:match("^broadcast 127%.")
                    or line:match("^local " .. cl.net.prefix:gsub("%.", "%%.")) or
                    line:match("^broadcast " .. cl.net.prefix:gsub("%.", "%%."))
                assert.truthy(ok, name .. ": unexpected route: " .. line)
            end
            local fwd = cl.net:run(name, { "sysctl", "-n", "net.ipv4.ip_forward" })
            assert.equal("0", fwd.stdout:match("%d"))
        end
        local veths = {}
        for _, name in ipairs(ncluster.HOSTS) do veths[#veths + 1] = cl.net.hosts[name].veth end
        table.sort(veths)
        assert.same(veths, cl.net:bridge_ports())
        assert.truthy(cl.net.root_ip:match("^198%.1[89]%.%d+%.1$"), cl.net.root_ip)
    end)

    it("announces each chat server's own address to status, clients and peers", function()
        for _, name in ipairs(ncluster.CHATS) do
            local info = host.json.decode(assert(cl.redis:call("GET", "chatserver_" .. name)))
            local public = cl:dial(name) -- its own address, or its relay's in front of it
            assert.truthy(public:match("^198%.1[89]%."), public)
            assert.equal(public, info.host)
            assert.equal(ncluster.PORTS.chat, tonumber(info.port))
            assert.equal(public .. ":" .. ncluster.PORTS.chat_rpc, info.rpc)
        end
        local u = cl:user()
        local reply = cl:gate_login(u)
        assert.equal(0, reply.error)
        assert.truthy(cl:chat_at(reply), host.json.encode(reply))
    end)

    it("lets a user on one chat host chat with a user on the other", function()
        local a, b = cl:user(), cl:user()
        local thread = cl:befriend(a, b)
        local ca = chat_login(a, gate_login_to(a, "chat1"))
        local cb = chat_login(b, gate_login_to(b, "chat2"))
        local ack = text(ca, a, b, thread, "hello across hosts")
        assert.same(ack, cb:wait_push(1019)) -- pushed by chat1 to chat2 over its rpc address
        local back = text(cb, b, a, thread, "hello back")
        assert.same(back, ca:wait_push(1019))
        local ids = {}
        for _, d in ipairs(history(cb, thread)) do ids[#ids + 1] = d.msg_id end
        assert.same({ ack.chat_datas[1].message_id, back.chat_datas[1].message_id }, ids)
        ca:close()
        cb:close()
    end)

    -- What each role has logged so far (the tests after it look at what comes next).
    local function log_marks()
        local marks = {}
        for _, r in ipairs(cl.roles) do marks[r] = #r:log() end
        return marks
    end

    -- No role logged a line with a warning or an error since marks.
    -- ("timer tick skipped": a periodic task (the 200 ms load report, several Redis round
    -- trips of 40 ms here) ran into its next tick; nothing timed out for it)
    local function no_trouble_since(marks)
        for r, at in pairs(marks) do
            local new = r:log():sub(at + 1)
            for line in new:gmatch("[^\n]+") do
                local trouble = (line:find(" WARN ", 1, true) or line:find(" ERROR ", 1, true))
                    and not line:find("timer tick skipped", 1, true)
                assert.falsy(trouble, line)
            end
        end
    end

    it("keeps working with 20 ms added between every two hosts", function()
        local marks = log_marks()
        local ok, err = pcall(function()
            -- 20 ms from any host to any other, 40 ms round trips
            cl:delay(20)
            local a, b = cl:user(), cl:user()
            local thread = cl:befriend(a, b)
            local ca = chat_login(a, gate_login_to(a, "chat1"))
            local cb = chat_login(b, gate_login_to(b, "chat2"))
            -- the delay is there: a heartbeat's round trip cannot be shorter than 40 ms (a
            -- lower bound only, which no slowness of the machine can break)
            local t0 = host.timer.monotonic()
            assert.equal(0, assert(ca:request(1023, { fromuid = a.uid })).error)
            local rtt = host.timer.monotonic() - t0
            assert.truthy(rtt >= 39, "heartbeat round trip " .. rtt .. " ms: no delay in force")
            local sent = {}
            for i = 1, 5 do
                local ack = text(ca, a, b, thread, "slow " .. i)
                assert.same(ack, cb:wait_push(1019))
                sent[i] = ack.chat_datas[1].message_id
            end
            local got = {}
            for _, d in ipairs(history(cb, thread)) do got[#got + 1] = d.msg_id end
            assert.same(sent, got)
            ca:close()
            cb:close()
            no_trouble_since(marks) -- no probe, call or query timed out on the way
        end)
        pcall(cl.delay, cl, nil)
        assert(ok, err)
    end)

    it("moves a cut chat host's users to the other, keeping every acked message", function()
        local c, d = cl:user(), cl:user() -- c on chat2, the host that is cut; d on chat1
        local thread = cl:befriend(c, d)
        local cc = chat_login(c, gate_login_to(c, "chat2"))
        local cd = chat_login(d, gate_login_to(d, "chat1"))
        local acked = {}
        for i = 1, 3 do
            acked[#acked + 1] = text(cc, c, d, thread, "before " .. i).chat_datas[1].message_id
            assert.truthy(cd:wait_push(1019))
        end
        acked[#acked + 1] = text(cd, d, c, thread, "to c on chat2").chat_datas[1].message_id
        assert.truthy(cc:wait_push(1019))
        local ok, err = pcall(function()
            cl.net:link("chat2", false)
            -- status notices within two probes (a timeout twice, or a refusal once)
            assert(cl.status:await("chat server chat2 does not accept connections",
                2 * (ncluster.PROBE_INTERVAL_MS + ncluster.PROBE_TIMEOUT_MS) + 4000))
            cc:close() -- what c's client does when its server stops answering: log in again
            local reply = cl:gate_login(c)
            assert.equal(0, reply.error)
            assert.equal("chat1", cl:chat_at(reply))
            local again = chat_login(c, reply) -- chat1 tries to kick c on chat2, gives up
            for i = 1, 2 do
                acked[#acked + 1] = text(again, c, d, thread, "after " .. i).chat_datas[1].message_id
                assert.truthy(cd:wait_push(1019))
            end
            local seen = {}
            for _, m in ipairs(history(again, thread)) do seen[#seen + 1] = m.msg_id end
            assert.same(acked, seen)
            local rows = assert(cl.db:query("SELECT message_id FROM chat_message"
                .. " WHERE thread_id = ? ORDER BY message_id", thread))
            local stored = {}
            for i, r in ipairs(rows) do stored[i] = r.message_id end
            assert.same(acked, stored)
            again:close()
        end)
        cl.net:link("chat2", true)
        cd:close()
        assert(ok, err)
    end)
end)

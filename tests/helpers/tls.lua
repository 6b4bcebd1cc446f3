-- helpers.tls: test certificates made with the openssl command line, and the Python TLS
-- servers of tests/helpers (tls_server.py, tls_relay.py, tls_peer.py) started on free
-- loopback ports.
local host = require "host"
local util = require "helpers.util"

local M = {}

local function openssl(args)
    local argv = { "openssl" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local r = assert(host.proc.run(argv, { timeout_ms = 20000 }))
    assert(r.code == 0, "openssl " .. args[1] .. ": " .. tostring(r.stderr))
end

local EC = { "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes" }

local function with(list, more)
    local out = {}
    for _, v in ipairs(list) do out[#out + 1] = v end
    for _, v in ipairs(more) do out[#out + 1] = v end
    return out
end

-- ca(dir, name) -> {pem=, key=}: a self-signed CA in dir (files name.pem, name.key)
function M.ca(dir, name)
    local ca = { pem = dir .. "/" .. name .. ".pem", key = dir .. "/" .. name .. ".key" }
    openssl(with({ "req", "-x509" }, with(EC, { "-keyout", ca.key, "-out", ca.pem, "-days", "2",
        "-subj", "/CN=chathost test " .. name, "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign" })))
    return ca
end

-- cert(dir, ca, name, san?) -> {pem=, key=}: a server certificate signed by ca, for the
-- subjectAltName san (default "IP:127.0.0.1,DNS:localhost")
function M.cert(dir, ca, name, san)
    local c = { pem = dir .. "/" .. name .. ".pem", key = dir .. "/" .. name .. ".key" }
    local csr, ext = dir .. "/" .. name .. ".csr", dir .. "/" .. name .. ".ext"
    openssl(with({ "req" }, with(EC, { "-keyout", c.key, "-out", csr, "-subj", "/CN=" .. name })))
    assert(host.fs.write(ext, "subjectAltName=" .. (san or "IP:127.0.0.1,DNS:localhost") .. "\n"))
    openssl({ "x509", "-req", "-in", csr, "-CA", ca.pem, "-CAkey", ca.key, "-CAcreateserial",
        "-out", c.pem, "-days", "2", "-extfile", ext })
    return c
end

local function spawn(script, args)
    local argv = { "/usr/bin/python3", host.root .. "/tests/helpers/" .. script }
    for _, a in ipairs(args) do argv[#argv + 1] = tostring(a) end
    local p = assert(host.proc.spawn(argv, { stdout = "capture" }))
    local port = util.wait_until(function() return tonumber(p:output():match("^(%d+)\n")) end,
        10000, script .. "'s port")
    return { proc = p, port = assert(port), stop = function()
        p:kill("KILL")
        p:wait()
    end }
end

-- server(cert) -> {port=, stop=, proc=}: tls_server.py over https with cert; server("plain")
-- over http; server("stall"): accepts and never answers; server("proxy"): a CONNECT proxy
-- printing "CONNECT host:port" for each tunnel (proc:output())
function M.server(cert)
    if cert == "plain" or cert == "stall" or cert == "proxy" then
        return spawn("tls_server.py", { "--" .. cert })
    end
    return spawn("tls_server.py", { cert.pem, cert.key })
end

-- relay(cert, port) -> {port=, stop=}: https on its port, relayed in clear to port
function M.relay(cert, port)
    return spawn("tls_relay.py", { cert.pem, cert.key, port })
end

-- loopback_name() -> a host name other than localhost that /etc/hosts maps to 127.0.0.1
-- (the machine's own name, usually), or nil: a name to dial and to make a certificate out
-- to, resolved without DNS
function M.loopback_name()
    for line in (host.fs.read("/etc/hosts") or ""):gmatch("[^\n]+") do
        local ip, names = line:match("^%s*(127%.0%.0%.1)%s+([^#]+)")
        for name in (ip and names or ""):gmatch("%S+") do
            if name ~= "localhost" and name:find("^[%w][%w%.%-]*$") then return name end
        end
    end
end

-- peer(cert) -> {port=, stop=, proc=}: tls_peer.py, a TLS stream peer (echo, close with
-- and without close_notify; proc:output() says how each connection ended); peer("plain"):
-- one that greets in clear
function M.peer(cert)
    if cert == "plain" then return spawn("tls_peer.py", { "--plain" }) end
    return spawn("tls_peer.py", { cert.pem, cert.key })
end

return M

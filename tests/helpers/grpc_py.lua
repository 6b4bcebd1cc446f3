-- helpers.grpc_py: Python grpcio peers for interop specs. Stubs are generated from
-- proto/message.proto with protoc and grpc_python_plugin into a temporary folder.
local host = require "host"

local M = {}

local PY = "/usr/bin/python3" -- Debian's python3, with python3-grpcio (not the one on PATH)
local PEER = host.root .. "/tests/helpers/grpc_peer.py"

-- Generates the stubs once per process; returns the folder.
function M.stubs()
    if M.dir then return M.dir end
    local dir = assert(host.fs.mkdtemp("grpcpy"))
    local r = assert(host.proc.run({ "protoc", "--python_out=" .. dir, "--grpc_out=" .. dir,
        "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", "-I" .. host.root .. "/proto",
        host.root .. "/proto/message.proto" }))
    assert(r.code == 0, "protoc failed: " .. r.stderr)
    M.dir = dir
    return dir
end

local function run(args)
    local argv = { PY, PEER, M.stubs() }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local r = assert(host.proc.run(argv, { timeout_ms = 20000 }))
    assert(r.code == 0, "grpc_peer.py failed: " .. r.stderr)
    return host.json.decode(r.stdout)
end

-- A Python client call: {ok=true, reply=...} or {ok=false, code="UNIMPLEMENTED", details=...}
function M.call(target, method, req, timeout_s)
    return run({ "call", target, method, host.json.encode(req), tostring(timeout_s or 5) })
end

function M.raw(target, path)
    return run({ "raw", target, path })
end

-- A Python StatusService server; returns {port=, proc=} (stop with proc:kill()).
function M.serve()
    local portfile = M.stubs() .. "/port." .. host.crypto.random_hex(4)
    local p = assert(host.proc.spawn({ PY, PEER, M.stubs(), "serve", portfile }, { stdout = "null" }))
    local deadline = host.timer.monotonic() + 10000
    while host.fs.kind(portfile) ~= "file" do
        assert(host.timer.monotonic() < deadline, "python server did not start")
        host.timer.sleep(20)
    end
    return { port = tonumber(host.fs.read(portfile)), proc = p }
end

return M

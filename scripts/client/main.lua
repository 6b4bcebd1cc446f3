-- client.main: the command line of `chathost client`:
--   chathost client [--gate URL] [--ca-file PEM] [--email E --password P]
--                   [--send UID TEXT] [--listen] [--images-dir DIR]
-- Without --send or --listen it is the interactive UI (client.ui), logged in at once when
-- --email and --password are given. --send logs in, sends one message, prints the
-- server's acknowledgement as a JSON line and exits 0 (1 with the error sentence on
-- stderr). --listen logs in and prints every event as a JSON line until interrupted.
-- Both are logins of their own: the same user's interactive session is signed out.
local host = require "host"
local api = require "client.api"
local settings = require "client.settings"

local M = {}

M.USAGE = [[
usage: chathost client [--gate URL] [--ca-file PEM] [--email E --password P]
                       [--send UID TEXT] [--listen] [--images-dir DIR]
  --gate URL        the gate, http:// or https:// (default from config client.gate_url)
  --ca-file PEM     the CA that signed an https gate's certificate, and the TLS chat and
                    resource connections' when the gate names TLS ones (default: config
                    client.ca_file, else http_client.ca_file, else the system's CAs)
  --email E         log in with this e-mail ...
  --password P      ... and this password
  --send UID TEXT   send TEXT to the friend UID, print the acknowledgement, exit
  --listen          print incoming events as JSON lines until interrupted
  --images-dir DIR  where /save puts images (default ~/.local/share/chathost/images)
  --help, -h        this text
--send and --listen log in as E like the interactive client does; a user has one session
at a time (the latest login wins), so an interactive client signed in as the same user is
signed out ("logged in somewhere else") and goes back to its menu.
]]

local OPTIONS = { ["--gate"] = 1, ["--ca-file"] = 1, ["--email"] = 1, ["--password"] = 1,
    ["--send"] = 2, ["--listen"] = 0, ["--images-dir"] = 1, ["--help"] = 0, ["-h"] = 0 }

-- parse(args) -> opts | nil, message
function M.parse(args)
    local opts, i = {}, 1
    while i <= #args do
        local a = args[i]
        local n = OPTIONS[a]
        if not n then return nil, "unknown option " .. a end
        if i + n > #args then
            return nil, a .. " needs " .. (n == 1 and "a value" or n .. " values")
        end
        local key = a:gsub("^%-+", "")
        if n == 0 then opts[key] = true
        elseif n == 1 then opts[key] = args[i + 1]
        else opts[key] = { args[i + 1], args[i + 2] } end
        i = i + n + 1
    end
    if (opts.send or opts.listen) and not (opts.email and opts.password) then
        return nil, (opts.send and "--send" or "--listen") .. " needs --email and --password"
    end
    if opts.send and opts.listen then return nil, "--send and --listen do not go together" end
    if (opts.email == nil) ~= (opts.password == nil) then
        return nil, "--email and --password go together"
    end
    opts.gate = opts.gate or settings.gate_url
    opts.ca_file = opts["ca-file"] or settings.ca_file
    return opts
end

local function fail(msg)
    io.stderr:write("chathost client: ", msg, "\n")
    return 1
end

local function json_line(t)
    io.stdout:write(host.json.encode(t), "\n")
    io.stdout:flush()
end

function M.send(opts)
    local c = api.new { gate = opts.gate, ca_file = opts.ca_file }
    local me, err = c:login(opts.email, opts.password)
    local sent
    if me then sent, err = c:send(opts.send[1], opts.send[2]) end
    c:close()
    if not sent then return fail(err) end
    sent.kind = "sent"
    json_line(sent)
    return 0
end

function M.listen(opts)
    local done = host.promise()
    local c = api.new { gate = opts.gate, ca_file = opts.ca_file, on_event = function(ev)
        json_line(ev)
        if ev.kind == "kicked" or ev.kind == "offline" then done:resolve(1, ev.message) end
    end }
    host.on_stop(function() done:resolve(0) end)
    local me, err = c:login(opts.email, opts.password)
    if not me then
        c:close()
        return fail(err)
    end
    json_line { kind = "listening", uid = me.uid, name = me.name, server = c.server }
    local code, why = done:wait()
    c:close()
    if code ~= 0 then return fail(why) end
    return 0
end

function M.run(args)
    local opts, err = M.parse(args)
    if not opts then
        io.stderr:write("chathost client: ", err, "\n", M.USAGE)
        return 2
    end
    if opts.help or opts.h then
        io.stdout:write(M.USAGE)
        return 0
    end
    if opts.send then return M.send(opts) end
    if opts.listen then return M.listen(opts) end
    local ok, res = pcall(require "client.ui".run, opts)
    if not ok then -- e.g. stdin is a file: no terminal to talk to
        return fail((tostring(res):gsub("^[^:]+:%d+: ", "")))
    end
    return res
end

return M

-- chathost.role: the entry point of a role process (gate, verify, status, chat). Loads
-- the role's scripts with hot reload and runs their optional start(); the role's servers
-- are started by the host from the handler tables the scripts return.
local host = require "host"

local M = {}

function M.main(args)
    if #args > 0 then
        io.stderr:write("chathost: unexpected argument '", args[1], "'\n")
        return 2
    end
    local scripts, err = host.scripts.open { role = host.role }
    if not scripts then
        host.log.error("cannot load the scripts: ", err)
        return 1
    end
    M.scripts = scripts
    local handlers = scripts:handlers()
    host.log.info("started; scripts from ", scripts:stats().dir)
    if type(handlers.start) == "function" then handlers.start() end
end

return M

-- lib.current: a function the host keeps across hot reloads (a timer, host.redis's
-- on_reconnect) must not be a generation's handler itself, or an edited script would never
-- reach it: current(name) is a function that calls the current generation's handler
-- `name` (host.handlers()), if it has one.
local host = require "host"

return function(name)
    return function(...)
        local handler = host.handlers()[name]
        if handler then return handler(...) end
    end
end

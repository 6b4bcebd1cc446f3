-- helpers.scripts_lib: lets a spec require the roles' shared modules (scripts/lib/*.lua,
-- `require "lib.tokens"`) in the test process itself, whose host has Redis and MariaDB:
-- the spec calls the same functions another role calls (e.g. what the resource role does).
local host = require "host"

local dir = host.root .. "/scripts/?.lua"
if not package.path:find(dir, 1, true) then package.path = dir .. ";" .. package.path end

return require

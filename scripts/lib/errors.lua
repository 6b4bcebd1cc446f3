-- lib.errors: the error codes of docs/protocol.md §2, shared by every role. The one list is
-- the host's (host/errors.h, read here as host.errors), so C replies and scripts agree; this
-- module hands each script its own copy under the same names (errors.InvalidParams, ...).
local host = require "host"

local M = {}
for name, code in pairs(host.errors) do M[name] = code end
return M

-- status.policy: which chat server a user is sent to. Hot-reloadable: edit this file and
-- the next GetChatServer uses the new rule.
--
-- choose(servers, tie) gets the live servers (never none), sorted by name, each
-- { name=, host=, port=, load= } (load = logged-in sessions), and a counter that grows by
-- one per call; it returns one of them. Default: the built-in rule (status.least_loaded),
-- the fewest logged-in users, ties broken round-robin. A policy that raises or returns
-- anything but one of the servers is logged as a policy error, and that call falls back
-- to the built-in rule.
local least_loaded = require "status.least_loaded"

local M = {}

function M.choose(servers, tie)
    return least_loaded.choose(servers, tie)
end

return M

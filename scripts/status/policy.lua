-- status.policy: which chat server a user is sent to. Hot-reloadable: edit this file and
-- the next GetChatServer uses the new rule.
--
-- choose(servers, tie) gets the live servers, sorted by name, each
-- { name=, host=, port=, load= } (load = logged-in sessions), and a counter that grows by
-- one per call; it returns one of them. Default: the fewest logged-in users, ties broken
-- round-robin.
local M = {}

function M.choose(servers, tie)
    local best, candidates = math.huge, {}
    for _, s in ipairs(servers) do
        if s.load < best then
            best, candidates = s.load, { s }
        elseif s.load == best then
            candidates[#candidates + 1] = s
        end
    end
    if #candidates == 0 then return nil end
    return candidates[(tie % #candidates) + 1]
end

return M

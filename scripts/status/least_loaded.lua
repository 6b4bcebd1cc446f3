-- status.least_loaded: the built-in choice of a chat server: the fewest logged-in users,
-- ties broken round-robin. The default status.policy uses it, and GetChatServer falls back
-- to it when an edited policy raises or returns something that is not one of the servers.
local M = {}

-- choose(servers, tie) -> one of servers (nil when there are none); see status.policy.
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

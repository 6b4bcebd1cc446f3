-- status.least_loaded: the built-in choice of a chat server: the fewest logged-in users,
-- ties broken round-robin. The default status.policy uses it, and GetChatServer falls back
-- to it when an edited policy raises or returns something that is not one of the servers.
local M = {}

-- choose(servers, tie) -> one of servers (nil when there are none); see status.policy.
function M.choose(servers, tie)
    -- two passes and no table: this runs on every GetChatServer, over every live server
    local best, ties = math.huge, 0
    for _, s in ipairs(servers) do
        if s.load < best then
            best, ties = s.load, 1
        elseif s.load == best then
            ties = ties + 1
        end
    end
    if ties == 0 then return nil end
    local k = tie % ties
    for _, s in ipairs(servers) do
        if s.load == best then
            if k == 0 then return s end
            k = k - 1
        end
    end
end

return M

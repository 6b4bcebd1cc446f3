-- client.settings: the terminal client's settings: config client.* (host/lua/config.lua
-- fills every default; a plain copy, client.api iterates it), the chat role's limit of a
-- message, and the client's own limits the schema does not hold. Resolved once per load:
-- the client does not reload its scripts.
local host = require "host"

local M = host.config_copy().client

M.text_max_bytes = host.config.chat.text_max_bytes -- one message, as the chat role allows
M.image_max_bytes = host.config.resource.max_file_bytes -- one image, as the resource role allows
M.image_types = host.config_copy().resource.image_types    -- kinds by content it takes
M.events_max = 1000        -- events kept for next_event; beyond, the oldest go
M.history_default = 20     -- /history without N

return M

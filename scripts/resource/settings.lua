-- resource.settings: the resource role's settings (host.config.self = config `resource`,
-- host/lua/config.lua fills every default) under the names its scripts use. Resolved once
-- per script generation: config does not change while the process runs.
local host = require "host"

local self = host.config.self

-- The storage root: resource.dir (or CHATHOST_RESOURCE_DIR), else .run/files beside the
-- config file (make run's run directory); a relative path is taken from there too.
local function root()
    local dir = self.dir or ".run/files"
    if dir:sub(1, 1) ~= "/" then dir = host.root .. "/" .. dir end
    return (dir:gsub("/+$", ""))
end

local types = {}
while self.image_types[#types + 1] ~= nil do -- (a read-only config list: ipairs does not see through it)
    types[#types + 1] = self.image_types[#types + 1]
end

local M = {
    dir = root(),
    chunk_bytes = 32768,                        -- raw bytes per chunk (the client's MAX_FILE_LEN)
    max_file_bytes = self.max_file_bytes,       -- one file
    image_types = types,                        -- accepted by content
    quota_bytes = self.quota_bytes,             -- per user: uploads kept or in progress
    max_uploads = self.max_uploads,             -- unfinished uploads per user
    upload_ttl_s = self.upload_ttl_s,           -- no chunk this long: expired by the sweeper
    sweep_interval_ms = self.sweep_interval_ms,
    sweep_batch = self.sweep_batch,             -- uploads expired per tick at most
    rename_grace_ms = self.rename_grace_ms,     -- a renamed old object's old name kept
    session_recheck_ms = self.session_recheck_ms, -- a bound connection's session checked again
    max_chunks_in_flight = self.max_chunks_in_flight, -- a connection's chunks written at once
}

return M

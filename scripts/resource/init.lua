-- The resource role (docs/protocol.md §13): the Season 2 client's resource channel, frames
-- [msg_id u16 BE][body_len u32 BE][JSON] (the host's chat server with the 6-byte header,
-- no login timeout). Avatars (1031 up, 1033 down) and chat images (1041/1037/1043 up,
-- 1045/1047 down), each request answered with id + 1; identity per connection as
-- resource.identity says. The same files over signed plain HTTP (resource.http). start() prepares the storage folders and the expiry sweeper.
local host = require "host"
local current = require "lib.current"
local upload = require "resource.upload"
local download = require "resource.download"
local settings = require "resource.settings"
local sweep = require "resource.sweep"
local http = require "resource.http"
local migrate = require "resource.migrate"

local M = {}

M.messages = {
    [1031] = upload.avatar,     -- avatar chunk (stop-and-wait) -> 1032
    [1033] = download.avatar,   -- avatar chunk download -> 1034
    [1037] = upload.next,       -- image chunk 2.. -> 1038
    [1041] = upload.first,      -- image chunk 1 -> 1042
    [1043] = upload.resume,     -- image chunk after a pause -> 1044
    [1045] = download.info,     -- image size by message_id -> 1046
    [1047] = download.image,    -- image chunk download -> 1048
}

-- The connection is gone: what its session kept open is closed.
function M.on_close(session)
    upload.on_close(session)
    download.on_close(session)
end

-- resource.http_port: signed plain HTTP downloads
M.routes = http.routes

-- The sweeper's tick, through current() so an edited sweep is used at its next tick.
function M.sweep()
    local _, err = sweep.tick()
    if err then host.log.warn("expiry sweep: ", tostring(err)) end
end

-- /healthz: besides Redis and MariaDB, the storage folder takes a file.
function M.health()
    return { storage = upload.store:check() }
end

function M.start()
    local ok, err = upload.store:prepare()
    if not ok then
        host.log.error("storage folder ", settings.dir, ": ", tostring(err),
            " (uploads will fail with 1105 until it is writable)")
    end
    -- (uploads from before the tally, completions cut short: once, in the background;
    -- requests wait for it)
    host.spawn(migrate.bitmaps, upload.recover)
    if ok then
        host.spawn(function() -- (a folder not made now is made by the completion needing it)
            local made, merr = upload.store:prepare_objects()
            if not made then host.log.warn("objects' folders: ", tostring(merr)) end
            -- (files stored before BLAKE3 named them: renamed, downloads going on)
            local renamed, rerr = pcall(migrate.rename_old_objects)
            if not renamed then host.log.warn("objects stored before BLAKE3: ", tostring(rerr)) end
        end)
    end
    host.timer.every(settings.sweep_interval_ms, current("sweep"))
    host.log.info("resource storage in ", settings.dir)
end

return M

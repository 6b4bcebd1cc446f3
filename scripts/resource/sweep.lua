-- resource.sweep: incomplete uploads expire (docs/protocol.md §13.6). Each tick takes at
-- most resource.sweep_batch unfinished uploads whose row was not touched for
-- resource.upload_ttl_s: one whose partial file was written within the TTL (a chunk came:
-- its mtime) is touched and kept; the others are marked failed (state 2) and their partial
-- file is removed. A later first chunk under the same name by the same owner starts it again.
-- One whose completion was cut short (its partial's cut name, lib.store) is finished
-- instead (resource.upload.finish_cut), if the start did not.
local host = require "host"
local settings = require "resource.settings"
local uploads = require "resource.uploads"
local upload = require "resource.upload"

local M = {}

-- tick() -> uploads expired | nil, err
function M.tick()
    local rows, err = uploads.stale(settings.upload_ttl_s, settings.sweep_batch)
    if not rows then return nil, err end
    local expired = 0
    for _, row in ipairs(rows) do
        local id = row.upload_id
        if host.file.stat(upload.store:cut_path(id)) then
            -- a completion cut short that the start could not finish: finished, not expired
            local whole, ferr = uploads.find(row.kind, row.name)
            if ferr then return nil, ferr end
            if whole and whole.upload_id == id and whole.state == uploads.UPLOADING then
                upload.finish_cut(whole)
            end
        else
            local st, serr, code = host.file.stat(upload.store:partial_path(id))
            if not st and code ~= "ENOENT" then return nil, serr end -- (ENOENT: nothing written)
            if st and os.time() - st.mtime < settings.upload_ttl_s then
                uploads.touch(id)
            else
                local failed, ferr = uploads.fail(row)
                if failed == nil then return nil, ferr end
                if failed then
                    local ok, rerr = upload.store:remove_partial(id)
                    if not ok then host.log.warn("partial of upload ", id, ": ", tostring(rerr)) end
                    expired = expired + 1
                end
            end
        end
    end
    if expired > 0 then host.log.info("expired ", expired, " unfinished upload(s)") end
    return expired
end

return M

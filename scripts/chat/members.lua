-- chat.members: each chat server's cache of group member lists, so the fan-out of a group
-- message reads no SQL for them (docs/protocol.md §6.6). A list is valid while Redis's
-- gver_<thread_id> still holds the version it was read under: every membership change
-- writes a new random version there (changed), which every server sees at its next
-- message (one GET). The version is read before the list, so a list read during a change
-- is never kept under the change's version. A cache miss reads the members from MySQL.
-- At most chat.group_cache_max groups are kept (then the cache starts empty); it is a
-- module local (a reload starts empty) and is emptied when Redis comes back from an
-- outage (it may have lost versions).
local host = require "host"
local keys = require "lib.keys"
local groups = require "lib.groups"
local settings = require "chat.settings"

local M = {}

local NONE = "-" -- the version of a group whose key is absent (never changed, or lost)

local cache, count = {}, 0 -- thread_id -> { version, uids = array, set = uid -> true }

-- of(thread_id) -> { uids, set } (uids empty: no such group) | nil, err
function M.of(thread_id)
    local version, err = host.redis.call("GET", keys.group_version(thread_id))
    if err then return nil, err end
    version = version or NONE
    local hit = cache[thread_id]
    if hit and hit.version == version then return hit end
    local uids, qerr = groups.uids(thread_id)
    if not uids then return nil, qerr end
    host.metrics.inc("chathost_chat_group_member_loads_total", 1, nil,
        "group member lists read from MySQL (not cached, or changed since: chat.members)")
    local entry = { version = version, uids = uids, set = {} }
    for _, u in ipairs(uids) do entry.set[u] = true end
    if #uids == 0 then return entry end -- not kept: ids that are no group cannot fill it
    if not hit then
        if count >= settings.group_cache_max then cache, count = {}, 0 end
        count = count + 1
    end
    cache[thread_id] = entry
    return entry
end

local WRITE_ATTEMPTS = 3 -- a version not written leaves other servers' lists stale

-- changed(thread_id, gone?) -> true | nil, err: the members changed (gone: the group was
-- deleted); every server reads the list again at its next use. The write is tried
-- WRITE_ATTEMPTS times (a command timeout is not an outage: no reconnect clears the caches).
function M.changed(thread_id, gone)
    if cache[thread_id] then
        cache[thread_id] = nil
        count = count - 1
    end
    local key = keys.group_version(thread_id)
    local ok, err
    for _ = 1, WRITE_ATTEMPTS do
        if gone then
            ok, err = host.redis.call("DEL", key)
        else
            ok, err = host.redis.call("SET", key, host.crypto.random_hex(8))
        end
        if ok then return true end
    end
    return nil, err
end

-- clear(): forgets every list (Redis came back and may have lost versions).
function M.clear()
    cache, count = {}, 0
end

return M

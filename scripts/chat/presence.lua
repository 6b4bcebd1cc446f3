-- chat.presence: where a user is logged in, in Redis: uip_<uid> = the chat server's name
-- and usession_<uid> = the session id, both with presence_ttl_s that heartbeats refresh.
-- Logins write them holding the user's lock (chat.login); refreshing and removing compare
-- usession_<uid> with the caller's session in one Redis script, so an old session never
-- extends or deletes the keys of a newer login, whatever the timing.
local host = require "host"
local keys = require "lib.keys"
local limiter = require "lib.limiter"
local redis_scripts = require "lib.redis_scripts"
local settings = require "chat.settings"

local M = {}

-- KEYS: usession_, uip_; ARGV: session id, ttl (s), server name.
-- 1 refreshed; 2 the keys were gone (expired, flushed) and are set again; 0 another
-- login owns them.
local REFRESH = [[
local current = redis.call('GET', KEYS[1])
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
  return 2
end
if current ~= ARGV[1] then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
]]

-- where(uid) -> server name | nil (offline) | nil, err
function M.where(uid)
    return host.redis.call("GET", keys.user_server(uid))
end

-- set(uid, session_id) -> true | nil, err: this server and session, with the TTL.
-- Callers hold lock:lock_<uid>.
function M.set(uid, session_id)
    local ttl = settings.presence_ttl_s
    local res, err = host.redis.pipeline {
        { "SET", keys.user_server(uid), settings.name, "EX", ttl },
        { "SET", keys.user_session(uid), session_id, "EX", ttl },
    }
    if not res then return nil, err end
    for i = 1, 2 do
        if res[i] ~= "OK" then return nil, type(res[i]) == "table" and res[i].err or "not set" end
    end
    return true
end

-- refresh(uid, session_id) -> true | false (another login owns the keys) | nil, err
-- Keys that vanished are written again: a newer login would have replaced them instead.
function M.refresh(uid, session_id)
    local res, err = host.redis.call("EVAL", REFRESH, 2, keys.user_session(uid),
        keys.user_server(uid), session_id, settings.presence_ttl_s, settings.name)
    if res == nil then return nil, err end
    return res ~= 0
end

-- Both keys, usession_ (compared with the session id) first.
local function presence_keys(uid)
    return { keys.user_session(uid), keys.user_server(uid) }
end

-- remove(uid, session_id) -> true | false (the keys are another login's, or gone) | nil, err
function M.remove(uid, session_id)
    return redis_scripts.delete_if_equal(presence_keys(uid), session_id)
end

-- remove_all(sessions) -> true | nil, err: remove() for many bound sessions (at shutdown).
function M.remove_all(sessions)
    return redis_scripts.pipeline_each(sessions, function(s)
        return redis_scripts.delete_if_equal_cmd(presence_keys(s.uid), s.id)
    end)
end

-- reannounce(sessions) -> true | nil, err: refresh() for many bound sessions, when Redis
-- may have lost every key (restarted empty, flushed): the keys that vanished are written
-- again at once, not at each session's next heartbeat (pushes would find no uip_ until
-- then); a newer login's keys are left alone.
function M.reannounce(sessions)
    return redis_scripts.pipeline_each(sessions, function(s)
        return { "EVAL", REFRESH, 2, keys.user_session(s.uid), keys.user_server(s.uid), s.id,
            settings.presence_ttl_s, settings.name }
    end)
end

-- cleanup(uid, session_id) -> true | false | nil, err
-- After a session ends: removes the keys if they are still this session's. No user lock
-- is needed: the comparing removal cannot touch a newer login's keys, whether that login
-- wrote them before or writes them after. At most 64 cleanups talk to Redis at once
-- (the keys expire by themselves if one waits too long).
local cleanups = limiter.new(64) -- thousands of sessions may close at once

function M.cleanup(uid, session_id)
    local ok, lerr = cleanups:acquire(settings.lock_wait_ms)
    if not ok then return nil, "too many cleanups at once: " .. tostring(lerr) end
    local removed, err = M.remove(uid, session_id)
    cleanups:release()
    return removed, err
end

return M

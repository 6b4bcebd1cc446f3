-- chat.settings: this chat instance's settings, host.config.self (the shared chat section
-- merged with chat.instances[name]; host/lua/config.lua fills every default and
-- public_host), under the names the chat scripts use. Resolved once per script
-- generation: config does not change while the process runs.
local host = require "host"

local self = host.config.self

local M = {
    name = self.name,
    host = self.public_host,                        -- what clients and peers dial
    port = self.port,
    ws_port = (self.ws_port or 0) > 0 and self.ws_port or nil, -- WebSocket clients' port
    rpc_port = self.rpc_port,
    page_size = self.page_size,                     -- threads / messages per page
    presence_ttl_s = self.presence_ttl_s,           -- uip_/usession_, refreshed by 1023
    alive_ttl_s = self.alive_ttl_s,                 -- chatserver_<name>
    report_interval_ms = self.report_interval_ms,
    lock_ttl_ms = self.lock_ttl_ms,                 -- lease of lock:lock_<uid>
    lock_wait_ms = self.lock_wait_ms,               -- then 1018
    login_concurrency = self.login_concurrency,     -- logins in progress at once
    login_wait_ms = self.login_wait_ms,             -- a queued login's wait, then 1018
    text_max_items = self.text_max_items,           -- per 1017
    text_max_bytes = self.text_max_bytes,           -- per content
    batch_window_ms = self.batch_window_ms,         -- group commit of 1017 messages
    batch_max = self.batch_max,                     -- rows per multi-row INSERT
    dedupe_window_s = self.dedupe_window_s,         -- a resent unique_id answers its first
    handler_timeout_ms = self.handler_timeout_ms,   -- a handler running longer: cancelled
    kick_timeout_ms = self.kick_timeout_ms,         -- NotifyKickUser deadline
    rpc_timeout_ms = self.push_timeout_ms,          -- pushes to peers
    push_queue_max = self.push_queue_max,           -- per sending session (chat.push)
    push_batch_window_ms = self.push_batch_window_ms, -- pushes to a peer gathered (chat.push)
    push_batch_max = self.push_batch_max,           -- pushes per NotifyBatch call
    push_link = self.push_link,                     -- pushes to peers over a link (chat.link)
    push_link_window = self.push_link_window,       -- its batches unanswered at most
    max_body_bytes = self.max_body_bytes,           -- a frame's body, ours and the peers'
    heartbeat_timeout_ms = self.heartbeat_timeout_ms, -- a silent connection is closed
    location_cache_ms = self.location_cache_ms,     -- a receiver's uip_ reused (chat.push)
    apply_list_max = self.apply_list_max,           -- applications read for 1006
    friend_list_max = self.friend_list_max,         -- friends read for 1006 (then cut)
    group_max_members = self.group_max_members,     -- per group, owner included
    group_max_per_user = self.group_max_per_user,   -- groups a user is in
    group_name_max_bytes = self.group_name_max_bytes,
    group_cache_max = self.group_cache_max,         -- member lists cached (chat.members)
    unread_count_max = self.unread_count_max,       -- unread counts in 1026 cut here
}

-- A frame body may not exceed this (uint16 length field).
M.MAX_REPLY_BYTES = 65535

M.rpc_address = M.host .. ":" .. tostring(M.rpc_port)

return M

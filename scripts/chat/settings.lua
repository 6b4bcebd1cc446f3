-- chat.settings: this chat instance's settings (host.config.self: the shared chat section
-- merged with chat.instances[name]), with the defaults of shared/PROTOCOL.md for anything
-- the config leaves out. Resolved once per script generation: config does not change
-- while the process runs.
local host = require "host"

local self = host.config.self

local function pick(name, default)
    local v = self[name]
    if v == nil then return default end
    return v
end

local M = {
    name = self.name,
    host = self.public_host or pick("host", "127.0.0.1"), -- what clients and peers dial
    port = self.port,
    rpc_port = self.rpc_port,
    page_size = pick("page_size", 50),                -- threads / messages per page
    presence_ttl_s = pick("presence_ttl_s", 120),     -- uip_/usession_, refreshed by 1023
    alive_ttl_s = pick("alive_ttl_s", 15),            -- chatserver_<name>
    report_interval_ms = pick("report_interval_ms", 5000),
    lock_ttl_ms = pick("lock_ttl_ms", 10000),         -- lease of lock:lock_<uid>
    lock_wait_ms = pick("lock_wait_ms", 3000),        -- then 1018
    text_max_items = pick("text_max_items", 32),      -- per 1017
    text_max_bytes = pick("text_max_bytes", 4096),    -- per content
    batch_window_ms = pick("batch_window_ms", 2),     -- group commit of 1017 messages
    batch_max = pick("batch_max", 64),                -- rows per multi-row INSERT
    kick_timeout_ms = pick("kick_timeout_ms", 1000),  -- NotifyKickUser deadline
    rpc_timeout_ms = pick("push_timeout_ms", host.config.grpc.deadline_ms), -- pushes to peers
    apply_list_max = pick("apply_list_max", 100),     -- applications read for 1006
    friend_list_max = pick("friend_list_max", 1000),  -- friends read for 1006 (then cut)
}

-- A frame body may not exceed this (uint16 length field).
M.MAX_REPLY_BYTES = 65535

M.rpc_address = M.host .. ":" .. tostring(M.rpc_port)

return M

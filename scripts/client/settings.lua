-- client.settings: the terminal client's settings (host.config.client) with the defaults of
-- the config schema for anything left out, plus the limits the schema does not hold yet.
-- Resolved once per load: the client does not reload its scripts.
local host = require "host"

local cfg = host.config.client or {}

local function pick(name, default)
    local v = cfg[name]
    if v == nil then return default end
    return v
end

return {
    gate_url = pick("gate_url", "http://127.0.0.1:8080"),
    heartbeat_ms = pick("heartbeat_ms", 10000),       -- 1023 to the chat server
    http_timeout_ms = pick("http_timeout_ms", 5000),  -- one gate request, connect to answer
    retry_min_ms = pick("retry_min_ms", 200),         -- backoff of network retries
    retry_max_ms = pick("retry_max_ms", 5000),
    retry_attempts = pick("retry_attempts", 5),       -- tries of one request (gate) or one reconnection step
    reconnect_attempts = pick("reconnect_attempts", 10), -- logins after a lost chat connection
    connect_timeout_ms = pick("connect_timeout_ms", 5000), -- TCP connect to the chat server
    request_timeout_ms = pick("request_timeout_ms", 10000), -- a chat request without its reply fails
    events_max = 1000,           -- events kept for next_event; beyond, the oldest go
    history_default = 20,        -- /history without N
    text_max_bytes = 4096,       -- one message (the chat role's default text_max_bytes)
}

-- lib.keys: every Redis key the roles share (docs/protocol.md §7). Keys written for a
-- user or a session always get a TTL where they are written. Each key has one owner module
-- that reads and writes it: code_* lib.codes, utoken_ and restoken_ lib.tokens, upload_*
-- resource.uploads.
local M = {}

function M.code(email) return "code_" .. email end                 -- verification code
function M.code_tries(email) return "code_tries_" .. email end     -- wrong guesses so far
function M.code_hashes(email) return "code_hashes_" .. email end   -- hashing attempts so far
function M.token(uid) return "utoken_" .. uid end                  -- chat login token
function M.session_token(uid) return "restoken_" .. uid end        -- resource session token
function M.user_server(uid) return "uip_" .. uid end               -- chat server of a user
function M.user_session(uid) return "usession_" .. uid end         -- session id of a user
function M.lock(uid) return "lock:lock_" .. uid end                -- per-user login lock
M.LOGIN_COUNT = "logincount"                                       -- hash: server -> sessions
M.CHAT_SERVERS = "chatservers"                                     -- set of chat server names
function M.chat_server(name) return "chatserver_" .. name end      -- liveness: {host,port,rpc}
function M.group_version(thread_id) return "gver_" .. thread_id end -- member list version
function M.upload_commit(id) return "upload_commit_" .. id end    -- one completion at a time
function M.rate(kind, id) return "rate:" .. kind .. ":" .. id end  -- rate-limit counters
function M.email_ip(email, ip) return email .. "|" .. ip end       -- id of a pair's counter
-- rate-limit kinds: mail (verify: one mail per address per interval), code_ip (gate: code
-- requests per client IP), hash_ip (gate: password hashes for registrations and resets per
-- client IP), login_email_ip ("<email>|<ip>") / login_ip (gate: failed logins, with the
-- pending sets login_email_ip_inflight / login_ip_inflight of logins in flight),
-- login_email (failed logins of an e-mail from any address) and login_backoff (its backoff
-- marker)

return M

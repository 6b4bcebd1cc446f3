-- gate.web: the web client's static files (the folder gate.web_dir, web/ by default), served
-- by the gate so a browser opens the client where it logs in (docs/protocol.md §3.6):
-- GET / is index.html, GET /web/<name> a file of the folder. Only a plain name of the folder
-- itself with a known extension is served (no sub-folder, no dot-file, no "..", no escaped
-- byte), so no request reaches a file outside it; anything else is 404. The file streams
-- off the loop through req:send_file.
local host = require "host"

local M = {}

-- extension -> Content-Type; a file of any other type is not served
M.TYPES = {
    html = "text/html; charset=utf-8", js = "text/javascript; charset=utf-8",
    css = "text/css; charset=utf-8", json = "application/json", png = "image/png",
    svg = "image/svg+xml", ico = "image/x-icon", webmanifest = "application/manifest+json",
}

-- The page may load only its own scripts and styles, and talk to its own origin (the
-- gate) and to WebSocket chat servers on any host (their addresses come from the login).
M.CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    .. "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

-- gate.web_dir; a relative one is taken from the config file's folder (host.root)
local function folder()
    local dir = host.config.gate.web_dir
    if not dir or dir == "" then return nil end
    if dir:sub(1, 1) ~= "/" then dir = host.root .. "/" .. dir end
    return dir
end

-- name -> content type when name is a file name the folder may serve, else nil
function M.type_of(name)
    if type(name) ~= "string" or #name > 128 then return nil end
    if not name:match("^[%w][%w_%-%.]*$") or name:find("..", 1, true) then return nil end
    local ext = name:match("%.(%w+)$")
    return ext and M.TYPES[ext:lower()]
end

local function not_found()
    return 404, { ["cache-control"] = "no-store" }, { error = 404, message = "no such file" }
end

-- The response for the folder's file `name`.
local function serve(req, name)
    local dir, ctype = folder(), M.type_of(name)
    if not dir or not ctype then return not_found() end
    local max_age = host.config.gate.web_max_age_s
    -- index.html names the others: it is always checked again, so a new version of the
    -- client is picked up at the next load; the others may be kept web_max_age_s
    local cache = (name == "index.html" or max_age == 0) and "no-cache"
        or ("public, max-age=%d"):format(max_age)
    local res, err, code = req:send_file(dir .. "/" .. name, { content_type = ctype,
        headers = { ["cache-control"] = cache, ["x-content-type-options"] = "nosniff",
            ["content-security-policy"] = M.CSP, ["referrer-policy"] = "no-referrer" } })
    if res then return res end
    if code ~= "ENOENT" and code ~= "EISDIR" then host.log.warn("web ", name, ": ", tostring(err)) end
    return not_found()
end

function M.index(req) return serve(req, "index.html") end

function M.file(req) return serve(req, req.path:match("^/web/(.*)$")) end

-- GET /web/settings.json: the client's timings (config section `client`), so a browser
-- keeps the heartbeat and reconnect pace the terminal client has on this system.
function M.settings()
    if not folder() then return not_found() end
    local c = host.config.client
    return { error = 0, heartbeat_ms = c.heartbeat_ms, retry_min_ms = c.retry_min_ms,
        retry_max_ms = c.retry_max_ms, reconnect_attempts = c.reconnect_attempts,
        request_timeout_ms = c.request_timeout_ms }
end

M.routes = {
    ["GET /"] = M.index, ["HEAD /"] = M.index, ["GET /web/settings.json"] = M.settings,
    ["GET /web/*"] = M.file, ["HEAD /web/*"] = M.file,
}

return M

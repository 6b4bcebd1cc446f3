-- The gate role's business logic: the account routes of docs/protocol.md §3. The host's
-- HTTP server calls routes["METHOD /path"](req) in a coroutine per request and sends the
-- returned table as HTTP 200 JSON. One module per route; shared pieces are in scripts/lib/
-- (password, ratelimit, users) and gate.request/reply/codes/rpc/settings. The web client's
-- static files (GET / and /web/<name>) are gate.web's routes.
local reply = require "gate.reply"
local web = require "gate.web"

local routes = reply.counted {
    ["POST /get_varifycode"] = require "gate.get_varifycode",
    ["POST /user_register"] = require "gate.register",
    ["POST /reset_pwd"] = require "gate.reset_pwd",
    ["POST /user_login"] = require "gate.login",
}
for route, handler in pairs(web.routes) do routes[route] = handler end

return { routes = routes }

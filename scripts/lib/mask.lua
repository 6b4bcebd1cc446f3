-- lib.mask: what logs show of personal data.
local M = {}

-- "alice@example.com" -> "a***@example.com"; anything but a string -> "-"
function M.email(email)
    if type(email) ~= "string" then return "-" end
    return (email:gsub("^(.).-@", "%1***@"))
end

return M

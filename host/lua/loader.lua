-- chathost.loader: loads one generation of a role's scripts. Every module under the
-- scripts directory is loaded afresh into this generation's own module table, with its own
-- `require`, so a failed reload leaves the running generation untouched and a successful
-- one shares nothing with the old. Modules cannot create globals, and reading an undefined
-- global is an error (it is almost always a typo).
local M = {}

local base_names = {}
for k in pairs(_G) do base_names[#base_names + 1] = k end

local function strict_env(require_fn)
    local env = {}
    for _, k in ipairs(base_names) do env[k] = _G[k] end
    env.require = require_fn
    env._G = env
    return setmetatable(env, {
        __index = function(_, k)
            error("undefined global '" .. tostring(k) .. "'", 2)
        end,
        __newindex = function(_, k)
            error("assignment to global '" .. tostring(k) .. "': scripts must use locals", 2)
        end,
    })
end

local function file_exists(path)
    local f = io.open(path, "r")
    if f then f:close() return true end
    return false
end

-- Returns the path of a project module ("lib.errors" -> dir/lib/errors.lua), or nil.
local function module_path(dir, name)
    if not name:match("^[%w_%.%-]+$") then return nil end
    local rel = name:gsub("%.", "/")
    local p = dir .. "/" .. rel .. ".lua"
    if file_exists(p) then return p end
    p = dir .. "/" .. rel .. "/init.lua"
    if file_exists(p) then return p end
    return nil
end

local function traceback_handler(err)
    if type(err) ~= "string" then err = tostring(err) end
    return err
end

-- path -> { src = text, chunk = compiled } of the last load of each file. A file whose text
-- is unchanged runs its compiled chunk again (with the new generation's environment): its
-- module is still built afresh (new table, new locals), but its functions keep their
-- prototypes, so LuaJIT's traces for them stay valid and the file is not parsed again.
-- Compiling only what changed made a reload of the chat role under load cheaper (see
-- bench/RESULTS.md, hot reload).
local compiled = {}

local function compile(path)
    local f, oerr = io.open(path, "rb")
    if not f then return nil, oerr end
    local src = f:read("*a")
    f:close()
    local c = compiled[path]
    if c and c.src == src then return c.chunk end
    local chunk, err = loadstring(src, "@" .. path)
    if not chunk then return nil, err end
    compiled[path] = { src = src, chunk = chunk }
    return chunk
end

-- Loads dir/<role>/init.lua and everything it requires from dir. Returns the handler
-- table, or nil and a message naming the file and line.
function M.load(dir, role, validate)
    local loaded, loading = {}, {}
    local function project_require(name)
        if type(name) ~= "string" then error("require: module name must be a string", 2) end
        local v = loaded[name]
        if v ~= nil then return v end
        local path = module_path(dir, name)
        if not path then return require(name) end
        if loading[name] then error("require: circular dependency on " .. name, 2) end
        local chunk, err = compile(path)
        if not chunk then error(err, 0) end
        setfenv(chunk, strict_env(project_require))
        loading[name] = true
        local ok, res = xpcall(function() return chunk(name) end, traceback_handler)
        loading[name] = nil
        if not ok then error(res, 0) end
        -- a module always returns its table: nothing back is a file caught half-written
        -- (an editor's truncate, then write) or emptied, and must not replace working code
        if res == nil then error(path .. ": returned nothing (a module ends with `return M`)", 0) end
        loaded[name] = res
        return res
    end
    if not module_path(dir, role) then
        return nil, ("%s/%s/init.lua: no such file"):format(dir, role)
    end
    local ok, handlers = pcall(project_require, role)
    if not ok then return nil, tostring(handlers) end
    if type(handlers) ~= "table" then
        return nil, ("%s/%s/init.lua: must return a table of handlers, got %s"):format(dir, role,
            type(handlers))
    end
    if validate then
        local vok, verr = validate(handlers)
        if not vok then
            return nil, ("%s/%s/init.lua: %s"):format(dir, role, tostring(verr))
        end
    end
    return handlers
end

return M

-- helpers.browser: headless Chromium for specs, through tests/browser/driver.mjs (the
-- DevTools protocol over Chromium's debugging pipe, spoken by Node). One browser per spec
-- file; pages in browser contexts of their own (two users never share storage). Waits poll
-- a JavaScript condition in the page until it holds (no fixed sleeps).
local host = require "host"
local http = require "helpers.http"
local util = require "helpers.util"

local M = {}
M.__index = M

local Page = {}
Page.__index = Page

-- probe() -> true | false, why: whether node and Chromium are here and Chromium starts
function M.probe()
    local r = host.proc.run({ "sh", "-c", table.concat({
        "command -v node >/dev/null || { echo 'no node command'; exit; }",
        "command -v chromium >/dev/null || { echo 'no chromium command (tools/deps.sh installs it)'; exit; }",
        "timeout 30 chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1"
            .. " || echo 'chromium does not start headless here'",
    }, "\n") })
    local why = r and r.stdout:match("^%s*(.-)%s*$") or "sh failed"
    if why ~= "" then return false, why end
    return true
end

-- The folder screenshots land in (make test keeps them: build/test-artifacts).
function M.artifacts()
    local dir = os.getenv("CHATHOST_ARTIFACTS")
    if not dir then
        assert(host.fs.mkdir(host.root .. "/build"))
        dir = host.root .. "/build/test-artifacts"
    end
    assert(host.fs.mkdir(dir))
    return dir
end

-- start({flags = {"--flag", ...}}?) -> browser (flags: more Chromium command-line flags)
function M.start(opts)
    local dir = assert(host.fs.mkdtemp("browser"))
    local port_file = dir .. "/port"
    local flags = opts and opts.flags and table.concat(opts.flags, " ") or nil
    local proc = assert(host.proc.spawn({ "node", host.root .. "/tests/browser/driver.mjs", port_file },
        { stdout = "capture", stderr = "capture", env = flags and { CHROMIUM_FLAGS = flags } or nil }))
    local line = util.wait_until(function()
        return (host.fs.read(port_file) or ""):match("^%d+ .*\n") or proc.exited
    end, 30000, "Chromium to start")
    if type(line) ~= "string" then
        proc:kill("KILL")
        proc:wait()
        local _, err = proc:output()
        error("the browser driver did not start: " .. tostring(err))
    end
    local self = setmetatable({ proc = proc, dir = dir, port = tonumber(line:match("^%d+")),
        version = line:match("^%d+ (.-)\n") }, M)
    -- a loaded machine's Chromium may take seconds to load a page: 30 s for each answer
    self.conn = setmetatable({ port = self.port,
        conn = assert(host.tcp.connect("127.0.0.1", self.port, { timeout_ms = 30000 })) }, http)
    return self
end

-- call(cmd) -> the driver's answer (raises on its error)
function M:call(cmd)
    local res = assert(self.conn:post_json("/", cmd))
    local out = assert(res.json, res.body)
    if not out.ok then error(("browser %s: %s"):format(cmd.op, tostring(out.error)), 2) end
    return out
end

function M:stop()
    pcall(self.call, self, { op = "quit" })
    self.conn:close()
    if not self.proc:wait(5000) then
        self.proc:kill("KILL")
        self.proc:wait()
    end
    host.fs.rmtree(self.dir)
end

-- page(name, {width=, height=, mobile=}?) -> a page
function M:page(name, opts)
    local cmd = { op = "page", name = name }
    for k, v in pairs(opts or {}) do cmd[k] = v end
    self:call(cmd)
    return setmetatable({ browser = self, name = name }, Page)
end

function Page:go(url) self.browser:call { op = "goto", name = self.name, url = url } end

-- eval(js) -> the expression's value (JSON-able; promises awaited)
function Page:eval(js)
    local v = self.browser:call({ op = "eval", name = self.name, expr = js }).value
    if v == host.json.null then return nil end
    return v
end

local function q(s) return host.json.encode(s) end

-- wait(js, what?, timeout_ms?) -> js's first truthy value; raises with the page's log after
function Page:wait(js, what, timeout_ms)
    local v = util.wait_until(function() return self:eval(js) end, timeout_ms or 10000, what or js, 50)
    if v == nil then
        local lines = self.browser:call({ op = "log", name = self.name }).lines
        error(("%s: timed out waiting for %s (page state %s; body: %s; log: %s)"):format(self.name,
            what or js, tostring(self:eval("document.body.dataset.state")),
            tostring(self:eval("document.body.innerText.slice(0, 600)")), table.concat(lines, " | ")), 2)
    end
    return v
end

-- fill(id, value): types value into the input of that id
function Page:fill(id, value)
    assert(self:eval(("(() => { const e = document.getElementById(%s); if (!e) return false; e.value = %s;"
        .. " e.dispatchEvent(new Event('input', {bubbles: true})); return true })()"):format(q(id), q(value))),
        "no input " .. id)
end

function Page:click(id)
    assert(self:eval(("(() => { const e = document.getElementById(%s); if (!e) return false; e.click();"
        .. " return true })()"):format(q(id))), "no element " .. id)
end

-- text(id) -> the element's text ("" when empty; nil when there is none)
function Page:text(id)
    return self:eval(("document.getElementById(%s)?.textContent ?? null"):format(q(id)))
end

-- wait_text(id, text): until the element's text contains text (plain); -> the text
function Page:wait_text(id, text, timeout_ms)
    return self:wait(("(() => { const t = document.getElementById(%s)?.textContent || '';"
        .. " return t.includes(%s) ? t : null })()"):format(q(id), q(text)), id .. " saying " .. q(text), timeout_ms)
end

function Page:state() return self:eval("document.body.dataset.state") end

-- shot(file): a PNG of the page into the artifacts folder -> its path
function Page:shot(file)
    local path = M.artifacts() .. "/" .. file
    self.browser:call { op = "shot", name = self.name, path = path }
    return path
end

return M

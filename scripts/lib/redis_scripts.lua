-- lib.redis_scripts: Redis scripts more than one module runs.
local host = require "host"

local M = {}

-- Compare-and-delete. KEYS: the key compared, then any keys deleted with it; ARGV: the
-- value it must still hold. 1 when deleted, 0 when the key holds something else or is gone.
M.DELETE_IF_EQUAL = [[
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', unpack(KEYS))
return 1
]]

-- delete_if_equal_cmd(keys, value) -> the EVAL command, for a pipeline
function M.delete_if_equal_cmd(keys, value)
    local cmd = { "EVAL", M.DELETE_IF_EQUAL, #keys }
    for i, k in ipairs(keys) do cmd[3 + i] = k end
    cmd[#cmd + 1] = value
    return cmd
end

-- delete_if_equal(keys, value) -> true (deleted) | false (keys[1] holds something else,
-- or is gone) | nil, err. keys[1] is compared with value; all of keys go together.
function M.delete_if_equal(keys, value)
    local res, err = host.redis.call(unpack(M.delete_if_equal_cmd(keys, value)))
    if res == nil then return nil, err end
    return res == 1
end

local BATCH = 500 -- commands per pipeline: well below redis.max_pending

-- pipeline_each(list, cmd_of) -> true | nil, err: the command cmd_of(item) of every item
-- of list, a pipeline per BATCH items (a chat server may hold 100,000 sessions).
function M.pipeline_each(list, cmd_of)
    for first = 1, #list, BATCH do
        local cmds = {}
        for i = first, math.min(#list, first + BATCH - 1) do
            cmds[#cmds + 1] = cmd_of(list[i])
        end
        local res, err = host.redis.pipeline(cmds)
        if not res then return nil, err end
    end
    return true
end

return M

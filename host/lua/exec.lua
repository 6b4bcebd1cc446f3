-- chathost.exec: `chathost exec FILE [args...]` runs a Lua file as the main coroutine of a
-- process with the whole host API (benchmarks, one-off tools). The file gets its arguments
-- as `...`; a number it returns is the exit status.
local M = {}

function M.main(args)
    local file = args[1]
    if not file then
        io.stderr:write("usage: chathost exec FILE [args...]\n")
        return 2
    end
    local chunk, err = loadfile(file)
    if not chunk then
        io.stderr:write("chathost exec: ", err, "\n")
        return 2
    end
    local rest = {}
    for i = 2, #args do rest[#rest + 1] = args[i] end
    local code = chunk(unpack(rest))
    return type(code) == "number" and code or 0
end

return M

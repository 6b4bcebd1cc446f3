-- chathost.metrics_labels: a label table {route="POST /x", status=200} as the Prometheus
-- label string 'route="POST /x",status="200"' (keys sorted, values escaped).
local function escape(v)
    return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

return function(labels)
    local keys = {}
    for k in pairs(labels) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = k .. '="' .. escape(labels[k]) .. '"' end
    return table.concat(parts, ",")
end

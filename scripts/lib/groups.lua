-- lib.groups: the group_chat and group_member tables (sql/005_groups.sql). Every change of
-- a group's members or roles is one transaction that first locks the group's group_chat
-- row (FOR UPDATE), so changes of one group run one after the other and member_count stays
-- exact under concurrent invites and leaves; the limit is checked against it in the same
-- transaction. A refusal is returned as { refused = reason, uid = ?, field = ? } (nothing
-- written); the chat role answers it (chat.groups). Reasons: "unknown" (no such group, or
-- the user is not a member: the same answer), "role" (the user's role may not do it),
-- "policy" (only admins invite), "not_friend" (uid), "group_full", "user_full" (uid),
-- "not_member" (the target is not in the group), "rank" (the target's role is too high).
local host = require "host"
local sql = require "lib.sql"

local M = {}

M.OWNER, M.ADMIN, M.MEMBER = "owner", "admin", "member"

local function marks(n) return ("?, "):rep(n - 1) .. "?" end

local function refused(reason, extra)
    local r = { refused = reason }
    for k, v in pairs(extra or {}) do r[k] = v end
    return r
end

-- member(thread_id, uid) -> {role, joined_message_id} | false | nil, err
function M.member(thread_id, uid)
    local rows, err = host.db.query(
        "SELECT role, joined_message_id FROM group_member WHERE thread_id = ? AND uid = ?",
        thread_id, uid)
    if not rows then return nil, err end
    return rows[1] or false
end

-- uids(thread_id) -> array of the members' uids (empty: no such group) | nil, err
function M.uids(thread_id)
    local rows, err = host.db.query(
        "SELECT uid FROM group_member WHERE thread_id = ? ORDER BY uid", thread_id)
    if not rows then return nil, err end
    local out = {}
    for i, r in ipairs(rows) do out[i] = r.uid end
    return out
end

-- The group row, locked for the transaction: {name, owner_uid, invite_policy, member_count} | nil
local function lock_group(q, thread_id)
    return sql.must(q.query([[
SELECT name, owner_uid, invite_policy, member_count FROM group_chat WHERE thread_id = ?
FOR UPDATE]], thread_id))[1]
end

local function role_in(q, thread_id, uid)
    local r = sql.must(q.query(
        "SELECT role FROM group_member WHERE thread_id = ? AND uid = ?", thread_id, uid))[1]
    return r and r.role
end

-- The group, locked, and uid's role in it; nil when either is missing (the same to the caller).
local function open(q, thread_id, uid)
    local g = lock_group(q, thread_id)
    if not g then return nil end
    local role = role_in(q, thread_id, uid)
    if not role then return nil end
    return g, role
end

-- The first of uids that is not a friend of uid, if any.
local function not_friend(q, uid, uids)
    local rows = sql.must(q.query("SELECT friend_id FROM friend WHERE self_id = ? AND friend_id IN ("
        .. marks(#uids) .. ")", uid, unpack(uids)))
    local set = {}
    for _, r in ipairs(rows) do set[r.friend_id] = true end
    for _, u in ipairs(uids) do
        if not set[u] then return u end
    end
end

-- The first of uids already in max_per_user groups, if any. A plain read: two concurrent
-- joins of one user to two groups may pass the limit by one (member counts stay exact).
local function at_group_limit(q, uids, max_per_user)
    local rows = sql.must(q.query("SELECT uid, COUNT(*) AS n FROM group_member WHERE uid IN ("
        .. marks(#uids) .. ") GROUP BY uid", unpack(uids)))
    for _, r in ipairs(rows) do
        if r.n >= max_per_user then return r.uid end
    end
end

-- The first message a member joining now may read.
local function next_message_id(q, thread_id)
    return sql.must(q.query("SELECT COALESCE(MAX(message_id), 0) + 1 AS id FROM chat_message"
        .. " WHERE thread_id = ?", thread_id))[1].id
end

local function add_members(q, thread_id, uids, role_of, joined)
    local values, params = {}, {}
    for i, u in ipairs(uids) do
        values[i] = "(?, ?, ?, ?)"
        local n = #params
        params[n + 1], params[n + 2], params[n + 3], params[n + 4] = thread_id, u, role_of(u), joined
    end
    sql.must(q.exec("INSERT INTO group_member (thread_id, uid, role, joined_message_id) VALUES "
        .. table.concat(values, ", "), unpack(params)))
end

-- create(owner, name, uids, limits) -> {thread_id, uids (owner first)} | refusal | nil, err
-- uids: the other initial members, distinct, none the owner, each a friend of the owner.
-- limits: {max_members, max_per_user}.
function M.create(owner, name, uids, limits)
    local all = { owner }
    for i, u in ipairs(uids) do all[i + 1] = u end
    if #all > limits.max_members then return refused("group_full") end
    return sql.tx(function(q)
        local stranger = #uids > 0 and not_friend(q, owner, uids)
        if stranger then return refused("not_friend", { uid = stranger }) end
        local full = at_group_limit(q, all, limits.max_per_user)
        if full then return refused("user_full", { uid = full }) end
        local thread = sql.must(q.exec("INSERT INTO chat_thread (type) VALUES ('group')"))
        local tid = thread.insert_id
        sql.must(q.exec("INSERT INTO group_chat (thread_id, name, owner_uid, member_count)"
            .. " VALUES (?, ?, ?, ?)", tid, name, owner, #all))
        add_members(q, tid, all, function(u) return u == owner and M.OWNER or M.MEMBER end, 1)
        return { thread_id = tid, uids = all, name = name }
    end)
end

-- invite(inviter, thread_id, uids, limits) -> {added (uids not members before), group}
-- | refusal | nil, err
function M.invite(inviter, thread_id, uids, limits)
    return sql.tx(function(q)
        local g, role = open(q, thread_id, inviter)
        if not g then return refused("unknown") end
        if g.invite_policy == "admins" and role == M.MEMBER then return refused("policy") end
        local stranger = not_friend(q, inviter, uids)
        if stranger then return refused("not_friend", { uid = stranger }) end
        local rows = sql.must(q.query("SELECT uid FROM group_member WHERE thread_id = ? AND uid IN ("
            .. marks(#uids) .. ")", thread_id, unpack(uids)))
        local present, added = {}, {}
        for _, r in ipairs(rows) do present[r.uid] = true end
        for _, u in ipairs(uids) do
            if not present[u] then added[#added + 1] = u end
        end
        if #added == 0 then return { added = added, group = g } end
        if g.member_count + #added > limits.max_members then return refused("group_full") end
        local full = at_group_limit(q, added, limits.max_per_user)
        if full then return refused("user_full", { uid = full }) end
        add_members(q, thread_id, added, function() return M.MEMBER end, next_message_id(q, thread_id))
        sql.must(q.exec("UPDATE group_chat SET member_count = member_count + ? WHERE thread_id = ?",
            #added, thread_id))
        g.member_count = g.member_count + #added
        return { added = added, group = g }
    end)
end

local function delete_member(q, thread_id, uid)
    sql.must(q.exec("DELETE FROM group_member WHERE thread_id = ? AND uid = ?", thread_id, uid))
    sql.must(q.exec("UPDATE group_chat SET member_count = member_count - 1 WHERE thread_id = ?",
        thread_id))
end

local function set_owner(q, thread_id, uid)
    sql.must(q.exec("UPDATE group_member SET role = ? WHERE thread_id = ? AND uid = ?",
        M.OWNER, thread_id, uid))
    sql.must(q.exec("UPDATE group_chat SET owner_uid = ? WHERE thread_id = ?", uid, thread_id))
end

-- leave(uid, thread_id) -> {group, owner_uid (the new owner when the owner left),
-- deleted (true: uid was the last member, the group is gone)} | refusal | nil, err
-- An owner who leaves hands the group to the admin who joined first, else to the member
-- who joined first (ties: the smaller uid).
function M.leave(uid, thread_id)
    return sql.tx(function(q)
        local g, role = open(q, thread_id, uid)
        if not g then return refused("unknown") end
        if g.member_count <= 1 then
            sql.must(q.exec("DELETE FROM group_member WHERE thread_id = ?", thread_id))
            sql.must(q.exec("DELETE FROM group_chat WHERE thread_id = ?", thread_id))
            return { group = g, deleted = true }
        end
        delete_member(q, thread_id, uid)
        local out = { group = g }
        if role == M.OWNER then
            local heir = sql.must(q.query([[
SELECT uid FROM group_member WHERE thread_id = ?
ORDER BY role = 'admin' DESC, joined_at, uid LIMIT 1]], thread_id))[1].uid
            set_owner(q, thread_id, heir)
            out.owner_uid = heir
        end
        return out
    end)
end

-- remove(actor, thread_id, target) -> {group} | refusal | nil, err
-- The owner removes anyone else; an admin removes members only.
function M.remove(actor, thread_id, target)
    return sql.tx(function(q)
        local g, role = open(q, thread_id, actor)
        if not g then return refused("unknown") end
        if role == M.MEMBER then return refused("role") end
        local trole = role_in(q, thread_id, target)
        if not trole then return refused("not_member") end
        if trole == M.OWNER or (trole == M.ADMIN and role ~= M.OWNER) then
            return refused("rank")
        end
        delete_member(q, thread_id, target)
        return { group = g }
    end)
end

-- set_role(actor, thread_id, target, new_role "admin"|"member") -> {group, changed}
-- | refusal | nil, err: only the owner promotes and demotes.
function M.set_role(actor, thread_id, target, new_role)
    return sql.tx(function(q)
        local g, role = open(q, thread_id, actor)
        if not g then return refused("unknown") end
        if role ~= M.OWNER then return refused("role") end
        local trole = role_in(q, thread_id, target)
        if not trole then return refused("not_member") end
        if trole == new_role then return { group = g, changed = false } end
        sql.must(q.exec("UPDATE group_member SET role = ? WHERE thread_id = ? AND uid = ?",
            new_role, thread_id, target))
        return { group = g, changed = true }
    end)
end

-- transfer(actor, thread_id, target) -> {group} | refusal | nil, err: the owner makes
-- target the owner and becomes an admin.
function M.transfer(actor, thread_id, target)
    return sql.tx(function(q)
        local g, role = open(q, thread_id, actor)
        if not g then return refused("unknown") end
        if role ~= M.OWNER then return refused("role") end
        if not role_in(q, thread_id, target) then return refused("not_member") end
        sql.must(q.exec("UPDATE group_member SET role = ? WHERE thread_id = ? AND uid = ?",
            M.ADMIN, thread_id, actor))
        set_owner(q, thread_id, target)
        g.owner_uid = target
        return { group = g }
    end)
end

-- update(actor, thread_id, name?, invite_policy?) -> {group (as it is now)} | refusal
-- | nil, err: the owner or an admin renames the group or sets who may invite.
function M.update(actor, thread_id, name, invite_policy)
    return sql.tx(function(q)
        local g, role = open(q, thread_id, actor)
        if not g then return refused("unknown") end
        if role == M.MEMBER then return refused("role") end
        g.name = name or g.name
        g.invite_policy = invite_policy or g.invite_policy
        sql.must(q.exec("UPDATE group_chat SET name = ?, invite_policy = ? WHERE thread_id = ?",
            g.name, g.invite_policy, thread_id))
        return { group = g }
    end)
end

-- members(thread_id, cursor, limit) -> rows {uid, role, name, nick, icon} with uid >
-- cursor, ascending | nil, err
function M.members(thread_id, cursor, limit)
    return host.db.query([[
SELECT m.uid, m.role, u.name, u.nick, u.icon FROM group_member m JOIN user u ON u.uid = m.uid
WHERE m.thread_id = ? AND m.uid > ? ORDER BY m.uid LIMIT ?]], thread_id, cursor, limit)
end

-- of_user(uid, cursor, limit) -> rows {thread_id, name, owner_uid, invite_policy,
-- member_count, role} of uid's groups with thread_id > cursor, ascending | nil, err
function M.of_user(uid, cursor, limit)
    return host.db.query([[
SELECT g.thread_id, g.name, g.owner_uid, g.invite_policy, g.member_count, m.role
FROM group_member m JOIN group_chat g ON g.thread_id = m.thread_id
WHERE m.uid = ? AND m.thread_id > ? ORDER BY m.thread_id LIMIT ?]], uid, cursor, limit)
end

return M

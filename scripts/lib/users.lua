-- lib.users: the `user` table (sql/001_schema.sql), shared by the gate (accounts) and the
-- chat role (profiles). Uniqueness of names and e-mails is the database's job (UNIQUE
-- keys): callers insert and handle "exists"; taken() only spares a caller work (a password
-- hash) for a name or e-mail that is certainly taken. E-mails are stored lower-case; names
-- compare case-insensitively (the column's collation).
local host = require "host"
local sql = require "lib.sql"

local M = {}

local COLUMNS = "uid, name, email, pwd_hash, nick, `desc`, sex, icon"

-- create{name=, email=, pwd_hash=, nick=?, icon=?, sex=?} -> uid | nil, "exists" | nil, err
-- One INSERT: of two racing for a name or an e-mail, the UNIQUE key lets one in.
function M.create(u)
    local res, err, errno = host.db.exec(
        "INSERT INTO user (name, email, pwd_hash, nick, icon, sex) VALUES (?, ?, ?, ?, ?, ?)",
        u.name, u.email, u.pwd_hash, u.nick or "", u.icon or "", u.sex or 0)
    if res then return res.insert_id end
    if errno == sql.ER_DUP_ENTRY then return nil, "exists" end
    return nil, err
end

local function one(query, ...)
    local rows, err = host.db.query(query, ...)
    if not rows then return nil, err end
    return rows[1]
end

-- taken(name, email) -> true (an account has that name or e-mail) | false | nil, err
function M.taken(name, email)
    local row, err = one("SELECT 1 AS found FROM user WHERE name = ? OR email = ? LIMIT 1",
        name, email)
    if err then return nil, err end
    return row ~= nil
end

-- by_email(email) -> row | nil (no such user) | nil, err
function M.by_email(email)
    return one("SELECT " .. COLUMNS .. " FROM user WHERE email = ?", email)
end

-- by_name(name) -> row | nil (no such user) | nil, err
function M.by_name(name)
    return one("SELECT " .. COLUMNS .. " FROM user WHERE name = ?", name)
end

-- by_uid(uid) -> row | nil (no such user) | nil, err
function M.by_uid(uid)
    return one("SELECT " .. COLUMNS .. " FROM user WHERE uid = ?", uid)
end

-- public(row) -> the fields any user may see of another: never pwd_hash or email
-- (docs/protocol.md §9).
function M.public(row)
    return { uid = row.uid, name = row.name, nick = row.nick, icon = row.icon, sex = row.sex,
        desc = row.desc }
end

-- profile(uid) -> public fields | nil (no such user) | nil, err
function M.profile(uid)
    local row, err = one("SELECT uid, name, nick, `desc`, sex, icon FROM user WHERE uid = ?", uid)
    if not row then return nil, err end
    return M.public(row)
end

-- exists(uid) -> true | false | nil, err
function M.exists(uid)
    local row, err = one("SELECT 1 AS found FROM user WHERE uid = ?", uid)
    if err then return nil, err end
    return row ~= nil
end

-- set_password(uid, new_hash, old_hash?) -> true | false (no such user, or the hash is no
-- longer old_hash: someone changed it meanwhile) | nil, err
function M.set_password(uid, new_hash, old_hash)
    local res, err
    if old_hash then
        res, err = host.db.exec("UPDATE user SET pwd_hash = ? WHERE uid = ? AND pwd_hash = ?",
            new_hash, uid, old_hash)
    else
        res, err = host.db.exec("UPDATE user SET pwd_hash = ? WHERE uid = ?", new_hash, uid)
    end
    if not res then return nil, err end
    return res.affected == 1
end

return M

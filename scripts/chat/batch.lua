-- chat.batch: group commit of text messages. Rows stored by every session within
-- batch_window_ms (or until batch_max rows) go to MySQL as one multi-row INSERT; each
-- caller waits on the batch's promise and gets its own ids back only after the batch is
-- committed, so a 1018 never acknowledges a message that is not stored.
--
-- The open batch is a module local: after a reload the old generation's flusher still
-- completes the batch it has (its waiters hold it), and the new generation opens its own.
local host = require "host"
local messages = require "lib.messages"
local sql = require "lib.sql"
local settings = require "chat.settings"

local M = {}

-- The waiters' bound: well above a flush's worst case (pool wait + statement timeouts),
-- only there so no coroutine can wait forever. A waiter that gives up does not know
-- whether its rows were stored (the flush may still commit them): store says so with an
-- error that chat.reply answers 1019, never the "timeout" it would answer 1018 ("safe to
-- retry": the retry would store the messages twice).
local WAIT_MS = host.config.mysql.acquire_timeout_ms + 2 * host.config.mysql.write_timeout_s * 1000

local open -- the batch taking rows: { rows = {}, promise = p, closed = bool, done = bool }
local step -- nil: not checked yet; a number: multi-row INSERT ids are step apart; false:
           -- interleaved (lock mode 2, Galera): the INSERT checks its ids (insert_checked)

-- -> ids, dups (row indexes stored before: see messages.insert_each) | nil, err
local function insert(rows)
    if step == nil then
        local s, err = messages.id_step()
        if s == nil then
            host.log.warn("batch: cannot read innodb_autoinc_lock_mode: ", tostring(err))
        else
            step = s
        end
    end
    local ids, err, errno
    if step then
        -- one autocommit statement: a conflict rolled all of it back (insert_each, a
        -- transaction, retries through sql.tx)
        ids, err, errno = sql.retry_conflicts(messages.insert_multi, rows, step)
    elseif step == false then
        ids, err, errno = sql.retry_conflicts(messages.insert_checked, rows)
        if ids == false then
            host.metrics.inc("chathost_chat_batches_interleaved_total", 1, nil,
                "group commits whose multi-row INSERT got ids interleaved with another's")
        end
    end
    if ids then return ids, {} end
    -- a resent message fails the whole INSERT (unique sender_id, unique_id): row by row,
    -- it gets its first copy's id and the other sessions' rows are stored; so are the
    -- rows of an INSERT whose ids interleaved
    if ids == nil and step ~= nil and errno ~= sql.ER_DUP_ENTRY then return nil, err end
    return messages.insert_each(rows)
end

local function flush(batch)
    local ids, more = insert(batch.rows) -- more: the resent rows, or why it failed
    if ids then
        host.metrics.inc("chathost_chat_batches_total", 1, nil, "group commits of text messages")
        host.metrics.inc("chathost_chat_messages_stored_total", #batch.rows, nil,
            "text messages stored")
    else
        host.log.warn("batch: storing ", #batch.rows, " messages failed: ", tostring(more))
    end
    batch.done = true
    batch.promise:resolve(ids, more)
end

-- Takes the batch no more rows and sends it now (once, whoever asks first).
local function close(batch)
    if batch.closed then return end
    batch.closed = true
    if open == batch then open = nil end
    host.spawn(flush, batch)
end

local function new_batch()
    local batch = { rows = {}, promise = host.promise(), closed = false, done = false }
    host.spawn(function()
        host.timer.sleep(settings.batch_window_ms)
        close(batch)
    end)
    return batch
end

-- store(rows) -> ids (one per row, in order), resent | nil, err ("outcome unknown: ..."
-- when the wait ended before the batch did). resent: the indexes of rows not stored
-- because their (sender_id, unique_id) was (ids has the stored row's id).
-- rows: array of {thread_id, sender_id, recv_id, content, unique_id?, created_at, status,
-- msg_type?}.
function M.store(rows)
    if open and #open.rows + #rows > settings.batch_max then close(open) end
    local batch = open
    if not batch then
        batch = new_batch()
        open = batch
    end
    local first = #batch.rows
    for i, r in ipairs(rows) do batch.rows[first + i] = r end
    if #batch.rows >= settings.batch_max then close(batch) end
    local ids, more = batch.promise:wait(WAIT_MS)
    if not ids then
        if not batch.done then
            return nil, "outcome unknown: no answer from the batch in " .. WAIT_MS .. " ms"
        end
        return nil, more
    end
    local own, resent = {}, {}
    for i = 1, #rows do
        own[i] = ids[first + i]
        if more[first + i] then resent[i] = true end
    end
    return own, resent
end

return M

-- 003_chat_message_unique_id.sql: a 1017 resent after an unknown outcome (its server died
-- with it in flight) must not be stored twice. chat_message keeps the sender's unique_id,
-- and (sender_id, unique_id) is unique, so the database, which outlives any chat server,
-- holds the answer for the retry. VARBINARY: compared byte for byte (the table's
-- collation would take "A" for "a"). NULL (no unique_id sent) is never a duplicate.
ALTER TABLE chat_message ADD COLUMN unique_id VARBINARY(128) NULL AFTER content,
    ADD UNIQUE KEY uq_sender_unique (sender_id, unique_id);

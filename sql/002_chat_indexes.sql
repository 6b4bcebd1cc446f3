-- 002_chat_indexes.sql: the chat role's thread list (1025) pages by thread_id among the
-- threads where a user is user1 or user2; user2 has (user2_id, thread_id) since 001, user1
-- gets the same here, so both halves of the query read an index range in order.
CREATE INDEX idx_private_user1 ON private_chat (user1_id, thread_id);

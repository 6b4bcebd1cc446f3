-- 005_groups.sql: group chats and read cursors (docs/protocol.md §6.6, §7.1). A group is a
-- chat_thread of type 'group'; group_chat holds its name, owner, invite policy and its
-- exact member count (changed only in the transaction that adds or deletes member rows,
-- which first locks the group_chat row, so concurrent invites and leaves cannot overrun
-- chat.group_max_members). A group message is ONE chat_message row with recv_id = 0.
-- A removed or departed member's row is deleted: history is readable only by members, and
-- each member only from joined_message_id (the first message it may read).
CREATE TABLE group_chat (
    thread_id BIGINT UNSIGNED NOT NULL,
    name VARCHAR(255) NOT NULL,
    owner_uid INT UNSIGNED NOT NULL,
    invite_policy ENUM('anyone', 'admins') NOT NULL DEFAULT 'anyone',
    member_count INT UNSIGNED NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (thread_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE group_member (
    thread_id BIGINT UNSIGNED NOT NULL,
    uid INT UNSIGNED NOT NULL,
    role ENUM('owner', 'admin', 'member') NOT NULL DEFAULT 'member',
    joined_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    joined_message_id BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (thread_id, uid),
    KEY idx_group_member_uid (uid, thread_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The read cursor of a user in a thread (private or group): the highest message_id the
-- user marked read; it only grows (1085).
CREATE TABLE thread_read (
    uid INT UNSIGNED NOT NULL,
    thread_id BIGINT UNSIGNED NOT NULL,
    last_read_message_id BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (uid, thread_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

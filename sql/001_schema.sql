-- 001_schema.sql: the chat schema (docs/protocol.md §7). Uids start at 1001 and are
-- allocated by AUTO_INCREMENT on user.uid; names and e-mails are unique in the database,
-- so concurrent registrations cannot both succeed. Passwords are argon2id hashes only.

CREATE TABLE user (
    uid INT UNSIGNED NOT NULL AUTO_INCREMENT,
    name VARCHAR(64) NOT NULL,
    email VARCHAR(255) NOT NULL,
    pwd_hash VARCHAR(255) NOT NULL,
    nick VARCHAR(64) NOT NULL DEFAULT '',
    `desc` VARCHAR(255) NOT NULL DEFAULT '',
    sex TINYINT NOT NULL DEFAULT 0,
    icon VARCHAR(255) NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (uid),
    UNIQUE KEY uniq_user_name (name),
    UNIQUE KEY uniq_user_email (email)
) ENGINE=InnoDB AUTO_INCREMENT=1001 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE friend (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    self_id INT UNSIGNED NOT NULL,
    friend_id INT UNSIGNED NOT NULL,
    back VARCHAR(255) NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uniq_friend_pair (self_id, friend_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE friend_apply (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    from_uid INT UNSIGNED NOT NULL,
    to_uid INT UNSIGNED NOT NULL,
    status TINYINT NOT NULL DEFAULT 0,
    descs VARCHAR(255) NOT NULL DEFAULT '',
    back_name VARCHAR(255) NOT NULL DEFAULT '',
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uniq_apply_pair (from_uid, to_uid),
    KEY idx_apply_to (to_uid, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE chat_thread (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    type ENUM('private', 'group') NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE private_chat (
    thread_id BIGINT UNSIGNED NOT NULL,
    user1_id INT UNSIGNED NOT NULL,
    user2_id INT UNSIGNED NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (thread_id),
    UNIQUE KEY uniq_private_pair (user1_id, user2_id),
    KEY idx_private_user2 (user2_id, thread_id),
    CONSTRAINT chk_private_order CHECK (user1_id < user2_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE chat_message (
    message_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    thread_id BIGINT UNSIGNED NOT NULL,
    sender_id INT UNSIGNED NOT NULL,
    recv_id INT UNSIGNED NOT NULL,
    content TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    status TINYINT NOT NULL DEFAULT 0,
    msg_type TINYINT NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id),
    KEY idx_thread_message (thread_id, message_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

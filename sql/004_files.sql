-- 004_files.sql: avatars and chat images (issue 13, the resource role). file_object holds
-- one row per distinct content (stored once, content-addressed by sha256, under
-- <resource.dir>/objects); upload one row per file a user uploads, named by the client's
-- unique_name (validated by lib.images.valid_name: never a path) and, for a chat image,
-- tied to the chat_message it belongs to (msg_type 1). utf8mb4_bin: a name is compared
-- byte for byte ("A.png" is not "a.png").
CREATE TABLE file_object (            -- one row per distinct content
    sha256 BINARY(32) NOT NULL,
    size BIGINT UNSIGNED NOT NULL,
    mime VARCHAR(32) NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (sha256)
) ENGINE=InnoDB;
CREATE TABLE upload (                 -- one row per file a user uploads (avatar or image)
    upload_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    kind TINYINT NOT NULL,            -- 1 avatar, 2 chat image
    name VARCHAR(100) NOT NULL,       -- the client's unique_name, validated, never a path
    owner_uid INT UNSIGNED NOT NULL,
    message_id BIGINT UNSIGNED NULL,  -- kind 2: the chat_message it belongs to
    total_size BIGINT UNSIGNED NOT NULL,
    md5 CHAR(32) NOT NULL DEFAULT '',
    received_bytes BIGINT UNSIGNED NOT NULL DEFAULT 0,
    state TINYINT NOT NULL DEFAULT 0, -- 0 uploading, 1 complete, 2 failed/expired
    sha256 BINARY(32) NULL,           -- set when complete
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (upload_id),
    UNIQUE KEY uq_kind_name (kind, name),
    KEY idx_owner (owner_uid, state),
    KEY idx_state_updated (state, updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- 007_upload_usage_index.sql: the quota check of every new upload (resource.uploads.usage:
-- the sum of a user's kept and running uploads' total_size, and how many are running) reads
-- the index alone. With idx_owner (owner_uid, state) it read each of the user's upload rows
-- too, one clustered-index lookup per upload the user ever completed.
ALTER TABLE upload DROP KEY idx_owner, ADD KEY idx_owner_usage (owner_uid, state, total_size);

-- 006_blake3.sql: stored files named by BLAKE3-256 instead of SHA-256 (docs/protocol.md
-- §13.6): the resource role's writer hashes every uploaded byte, and BLAKE3 takes about a
-- third of SHA-256's time there. The column that held the SHA-256 is now the content's
-- hash, whatever its algorithm; file_object.algo says which: 0 SHA-256 (the rows from
-- before this migration), 1 BLAKE3. The resource role renames the objects of algo 0 to
-- their BLAKE3 names at its start, in the background (resource.migrate), so that
-- the same picture uploaded before and after is still stored once.
ALTER TABLE file_object CHANGE sha256 content_hash BINARY(32) NOT NULL,
    ADD COLUMN algo TINYINT NOT NULL DEFAULT 0 AFTER content_hash;
ALTER TABLE file_object ALTER COLUMN algo SET DEFAULT 1;
ALTER TABLE upload CHANGE sha256 content_hash BINARY(32) NULL;
-- (the rename of an object from before looks up its uploads by their hash)
ALTER TABLE upload ADD KEY idx_content (content_hash);

-- claimrules schema version 3 (SQLite): refresh tokens move to a rowid table.
-- Keyed by their random hash (version 1, WITHOUT ROWID), every rotation wrote its new token into
-- a random leaf of a table as large as the database and marked the old one used in another, so
-- a large database dirtied a page per row written, and each commit wrote and checkpointed that
-- many pages. In rowid order the new token lands on the table's last page, next to the token it
-- replaces (issued by the previous rotation): one random page per rotation is left, in the
-- smaller index on the hash. The columns, and so every statement, are unchanged.
CREATE TABLE refresh_tokens_v3 (
    id         INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    family     TEXT NOT NULL REFERENCES refresh_families (family) ON DELETE CASCADE,
    expires_at INTEGER,
    used_at    INTEGER
);
-- Oldest expiry first, so the rows the purge deletes first sit together.
INSERT INTO refresh_tokens_v3 (token_hash, family, expires_at, used_at)
    SELECT token_hash, family, expires_at, used_at FROM refresh_tokens
    ORDER BY expires_at IS NULL, expires_at;
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_v3 RENAME TO refresh_tokens;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at) WHERE expires_at IS NOT NULL;

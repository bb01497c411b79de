-- claimrules schema version 4 (SQLite): refresh families move to a rowid table, and each refresh
-- token names its family's rowid beside its family.
-- Keyed by family (version 1, WITHOUT ROWID), a family's whole row, grant JSON included, was the
-- key of its B-tree, and an interior page holds whole keys: about 7 families of ~500 bytes each,
-- so 2,000,000 families made a tree 7 pages deep, and every refresh read those 7 pages again (a
-- read connection's page cache starts empty after every commit of another connection). A rowid
-- tree holds only rowids in its interior pages: the same families are 4 pages deep, reached by
-- the token's `family_id` without the index on `family`. The family string stays the family's
-- name for every other statement, and the foreign key with its cascade stays on it.
CREATE TABLE refresh_families_v4 (
    id         INTEGER PRIMARY KEY,
    family     TEXT NOT NULL UNIQUE,
    grant_json TEXT NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO refresh_families_v4 (family, grant_json, revoked)
    SELECT family, grant_json, revoked FROM refresh_families;
CREATE TABLE refresh_tokens_v4 (
    id         INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    family     TEXT NOT NULL REFERENCES refresh_families_v4 (family) ON DELETE CASCADE,
    family_id  INTEGER NOT NULL,
    expires_at INTEGER,
    used_at    INTEGER
);
INSERT INTO refresh_tokens_v4 (id, token_hash, family, family_id, expires_at, used_at)
    SELECT t.id, t.token_hash, t.family, f.id, t.expires_at, t.used_at
    FROM refresh_tokens t JOIN refresh_families_v4 f ON f.family = t.family
    ORDER BY t.id;
-- The tokens first: dropping a table deletes its rows, and with foreign keys on, deleting the
-- old families would cascade to the tokens that still referenced them.
DROP TABLE refresh_tokens;
DROP TABLE refresh_families;
ALTER TABLE refresh_families_v4 RENAME TO refresh_families;
ALTER TABLE refresh_tokens_v4 RENAME TO refresh_tokens;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at) WHERE expires_at IS NOT NULL;

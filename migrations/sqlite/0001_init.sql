-- claimrules schema version 1 (SQLite).
-- Secrets are never stored: codes, refresh tokens and sessions are keyed by SHA-256 hex digests.

CREATE TABLE codes (
    code_hash   TEXT PRIMARY KEY NOT NULL,
    grant_json  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    redeemed_at INTEGER,
    replayed    INTEGER NOT NULL DEFAULT 0,
    family      TEXT
) WITHOUT ROWID;
CREATE INDEX codes_expires_at ON codes (expires_at);

-- A family is one grant; its refresh tokens are the chain of rotations.
CREATE TABLE refresh_families (
    family     TEXT PRIMARY KEY NOT NULL,
    grant_json TEXT NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    family     TEXT NOT NULL REFERENCES refresh_families (family) ON DELETE CASCADE,
    expires_at INTEGER,
    used_at    INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE consents (
    user_id     TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    audience    TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    PRIMARY KEY (user_id, client_id, audience)
) WITHOUT ROWID;

CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    auth_time    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE login_counts (
    user_id TEXT PRIMARY KEY NOT NULL,
    count   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE signing_keys (
    kid               TEXT PRIMARY KEY NOT NULL,
    alg               TEXT NOT NULL,
    private_pkcs8_der BLOB NOT NULL,
    created_at        INTEGER NOT NULL,
    activates_at      INTEGER NOT NULL,
    retires_at        INTEGER
);

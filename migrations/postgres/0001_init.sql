-- claimrules schema version 1 (PostgreSQL). Tables go to the first schema of search_path.
-- Secrets are never stored: codes, refresh tokens and sessions are keyed by SHA-256 hex digests.

CREATE TABLE codes (
    code_hash   TEXT PRIMARY KEY,
    grant_json  TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    redeemed_at BIGINT,
    replayed    BOOLEAN NOT NULL DEFAULT FALSE,
    family      TEXT
);
CREATE INDEX codes_expires_at ON codes (expires_at);

-- A family is one grant; its refresh tokens are the chain of rotations.
CREATE TABLE refresh_families (
    family     TEXT PRIMARY KEY,
    grant_json TEXT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family     TEXT NOT NULL REFERENCES refresh_families (family) ON DELETE CASCADE,
    expires_at BIGINT,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE consents (
    user_id     TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    audience    TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    PRIMARY KEY (user_id, client_id, audience)
);

CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    auth_time    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE login_counts (
    user_id TEXT PRIMARY KEY,
    count   BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid               TEXT PRIMARY KEY,
    alg               TEXT NOT NULL,
    private_pkcs8_der BYTEA NOT NULL,
    created_at        BIGINT NOT NULL,
    activates_at      BIGINT NOT NULL,
    retires_at        BIGINT
);

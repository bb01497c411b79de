//! The statements whose text is the same in both dialects, over the schema of `migrations/`.
//!
//! Parameters are numbered `$1`, `$2`, …: PostgreSQL's style, which SQLite accepts too (a `$NNN`
//! parameter, numbered by first appearance; rusqlite binds by that position, sqlx-postgres by
//! number). Each number first appears in increasing order, so both bindings fill them right (the
//! tests below check that, and that SQLite prepares every statement). Booleans are written
//! `TRUE`, `NOT revoked`: PostgreSQL's `BOOLEAN` columns and SQLite's `INTEGER` 0/1 columns read
//! them the same. Statements only one dialect has (row locks, data-modifying `WITH`) stay in
//! that engine's module.

/// Stores a code: `$1` hash, `$2` grant JSON, `$3` expiry.
pub(crate) const PUT_CODE: &str =
    "INSERT INTO codes (code_hash, grant_json, expires_at) VALUES ($1, $2, $3)";

/// Marks a valid code redeemed at `$1` (also the expiry check) by hash `$2`; returns its grant.
pub(crate) const REDEEM_CODE: &str = "UPDATE codes SET redeemed_at = $1 \
     WHERE code_hash = $2 AND redeemed_at IS NULL AND expires_at > $1 \
     RETURNING grant_json";

/// Remembers that the code `$1` was replayed, so a family linked later is revoked too.
pub(crate) const MARK_REPLAYED: &str = "UPDATE codes SET replayed = TRUE WHERE code_hash = $1";

/// Links family `$1` to code `$2`; returns whether the code was replayed meanwhile.
pub(crate) const LINK_FAMILY: &str =
    "UPDATE codes SET family = $1 WHERE code_hash = $2 RETURNING replayed";

/// Revokes family `$1` (no-op when unknown or already revoked).
pub(crate) const REVOKE_FAMILY: &str =
    "UPDATE refresh_families SET revoked = TRUE WHERE family = $1 AND NOT revoked";

/// Creates family `$1` with grant JSON `$2`, or replaces its grant.
pub(crate) const PUT_FAMILY: &str =
    "INSERT INTO refresh_families (family, grant_json) VALUES ($1, $2) \
     ON CONFLICT (family) DO UPDATE SET grant_json = excluded.grant_json";

/// A token's state after a failed rotation (`$1` hash): `family`, `used_at`, `revoked`.
pub(crate) const REFRESH_STATE: &str = "SELECT t.family, t.used_at, f.revoked \
     FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family \
     WHERE t.token_hash = $1";

/// The condition of a valid refresh token: token `t` with hash `$1`, unused, in family `f` not
/// revoked, unexpired at `$2`. One definition for every read that decides a refresh.
macro_rules! valid_refresh {
    () => {
        " WHERE t.token_hash = $1 AND t.used_at IS NULL AND NOT f.revoked \
           AND (t.expires_at IS NULL OR t.expires_at > $2)"
    };
}

/// How a refresh read joins token `t` to its family `f`: on PostgreSQL by the family, on SQLite
/// by the family's rowid, which each token names too (migrations/sqlite/0004_*.sql).
macro_rules! family_of_token {
    (postgres) => {
        " JOIN refresh_families f ON f.family = t.family"
    };
    (sqlite) => {
        " JOIN refresh_families f ON f.id = t.family_id"
    };
}

/// The grant of refresh token `$1` if it is valid at `$2`, on PostgreSQL.
pub(crate) const REFRESH_GRANT: &str = concat!(
    "SELECT f.grant_json FROM refresh_tokens t",
    family_of_token!(postgres),
    valid_refresh!()
);

/// [`REFRESH_GRANT`] on SQLite.
pub(crate) const REFRESH_GRANT_SQLITE: &str = concat!(
    "SELECT f.grant_json FROM refresh_tokens t",
    family_of_token!(sqlite),
    valid_refresh!()
);

/// [`REFRESH_GRANT`] with the metadata rules stored for the grant's user (`NULL`s when none): the
/// token endpoint's two reads of a refresh in one statement, so one snapshot and one read
/// transaction. `{user_id}` is the engine's expression for the grant JSON's `user_id`
/// ([`super::codec::encode_grant`]).
macro_rules! refresh_grant_with_metadata {
    ($engine:ident, $user_id:literal) => {
        concat!(
            "SELECT f.grant_json, m.app_metadata, m.user_metadata FROM refresh_tokens t",
            family_of_token!($engine),
            " LEFT JOIN user_metadata m ON m.user_id = ",
            $user_id,
            valid_refresh!()
        )
    };
}

/// [`refresh_grant_with_metadata!`] on SQLite (`->>` with a label: SQLite 3.38 and later).
pub(crate) const REFRESH_GRANT_WITH_METADATA_SQLITE: &str =
    refresh_grant_with_metadata!(sqlite, "(f.grant_json ->> 'user_id')");

/// [`refresh_grant_with_metadata!`] on PostgreSQL (`grant_json` is `TEXT`).
pub(crate) const REFRESH_GRANT_WITH_METADATA_POSTGRES: &str =
    refresh_grant_with_metadata!(postgres, "(f.grant_json::jsonb ->> 'user_id')");

/// The consented scopes (JSON) of user `$1`, client `$2`, audience `$3`.
pub(crate) const CONSENT: &str = "SELECT scopes_json FROM consents \
     WHERE user_id = $1 AND client_id = $2 AND audience = $3";

/// Stores the consent of user `$1`, client `$2`, audience `$3`: scopes JSON `$4`.
pub(crate) const SAVE_CONSENT: &str =
    "INSERT INTO consents (user_id, client_id, audience, scopes_json) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (user_id, client_id, audience) \
     DO UPDATE SET scopes_json = excluded.scopes_json";

/// Stores session `$1` of user `$2`, logged in at `$3`, ending at `$4`.
pub(crate) const CREATE_SESSION: &str =
    "INSERT INTO sessions (session_hash, user_id, auth_time, expires_at) \
     VALUES ($1, $2, $3, $4)";

/// Session `$1` if it has not ended at `$2`, as [`super::codec::SessionColumns`].
pub(crate) const SESSION: &str = concat!(
    "SELECT ",
    super::codec::session_columns!(),
    " FROM sessions WHERE session_hash = $1 AND expires_at > $2"
);

/// Ends session `$1`.
pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE session_hash = $1";

/// Counts one more login of user `$1`; returns the new count.
pub(crate) const INCREMENT_LOGINS: &str =
    "INSERT INTO login_counts (user_id, count) VALUES ($1, 1) \
     ON CONFLICT (user_id) DO UPDATE SET count = login_counts.count + 1 \
     RETURNING count";

/// The stored metadata of user `$1`: `app_metadata`, `user_metadata` (JSON objects).
pub(crate) const USER_METADATA: &str =
    "SELECT app_metadata, user_metadata FROM user_metadata WHERE user_id = $1";

/// Stores app metadata `$1` and user metadata `$2` for user `$3`.
pub(crate) const PUT_USER_METADATA: &str =
    "INSERT INTO user_metadata (app_metadata, user_metadata, user_id) VALUES ($1, $2, $3) \
     ON CONFLICT (user_id) DO UPDATE SET \
     app_metadata = excluded.app_metadata, user_metadata = excluded.user_metadata";

/// Every signing key, oldest first, as [`super::codec::KeyColumns`].
pub(crate) const KEYS: &str = concat!(
    "SELECT ",
    super::codec::key_columns!(),
    " FROM signing_keys ORDER BY created_at, kid"
);

/// Stores a signing key, its columns bound in the order of [`super::codec::KeyColumns`].
pub(crate) const PUT_KEY: &str = concat!(
    "INSERT INTO signing_keys (",
    super::codec::key_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6)"
);

/// Retires key `$2` at `$1`.
pub(crate) const RETIRE_KEY: &str = "UPDATE signing_keys SET retires_at = $1 WHERE kid = $2";

/// The deletions of expired state that an index finds: `$1` the time, `$2` at most so many rows
/// ([`super::purge`] repeats each until it deletes fewer).
pub(crate) const PURGE_EXPIRED: [&str; 2] = [
    "DELETE FROM sessions WHERE session_hash IN \
     (SELECT session_hash FROM sessions WHERE expires_at <= $1 LIMIT $2)",
    "DELETE FROM refresh_tokens WHERE token_hash IN \
     (SELECT token_hash FROM refresh_tokens \
      WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2)",
];

/// The last of the next `$2` families after family `$1` (`NULL` past the last): a window of
/// [`PURGE_FAMILIES`].
pub(crate) const FAMILY_WINDOW: &str = "SELECT MAX(family) FROM \
     (SELECT family FROM refresh_families WHERE family > $1 ORDER BY family LIMIT $2) w";

/// In the window of families (`$1`, `$2`]: the tokens of revoked families, then the families
/// revoked or left without tokens.
pub(crate) const PURGE_FAMILIES: [&str; 2] = [
    "DELETE FROM refresh_tokens WHERE family IN (SELECT family FROM refresh_families \
     WHERE family > $1 AND family <= $2 AND revoked)",
    "DELETE FROM refresh_families WHERE family > $1 AND family <= $2 AND (revoked OR NOT EXISTS \
     (SELECT 1 FROM refresh_tokens t WHERE t.family = refresh_families.family))",
];

/// [`FAMILY_WINDOW`] on SQLite, by rowid (migrations/sqlite/0004_*.sql): the families of a
/// window are then neighbours in the table, as they were created, so a step deletes from a few
/// adjacent pages instead of one random page per family. The bounds stay text: `""` (the first
/// window's) casts to 0, below every rowid.
pub(crate) const FAMILY_WINDOW_SQLITE: &str = "SELECT CAST(MAX(id) AS TEXT) FROM \
     (SELECT id FROM refresh_families WHERE id > CAST($1 AS INTEGER) ORDER BY id LIMIT $2) w";

/// [`PURGE_FAMILIES`] on SQLite, in a window of rowids ([`FAMILY_WINDOW_SQLITE`]); the tokens are
/// still found by their family (the index the cascade uses).
pub(crate) const PURGE_FAMILIES_SQLITE: [&str; 2] = [
    "DELETE FROM refresh_tokens WHERE family IN (SELECT family FROM refresh_families \
     WHERE id > CAST($1 AS INTEGER) AND id <= CAST($2 AS INTEGER) AND revoked)",
    "DELETE FROM refresh_families \
     WHERE id > CAST($1 AS INTEGER) AND id <= CAST($2 AS INTEGER) AND (revoked OR NOT EXISTS \
     (SELECT 1 FROM refresh_tokens t WHERE t.family = refresh_families.family))",
];

/// The last of the next `$2` codes after code hash `$1` (`NULL` past the last): a window of
/// [`PURGE_CODES`] and [`SCRUB_CODES`].
pub(crate) const CODE_WINDOW: &str = "SELECT MAX(code_hash) FROM \
     (SELECT code_hash FROM codes WHERE code_hash > $1 ORDER BY code_hash LIMIT $2) w";

/// In the window of codes (`$1`, `$2`], the codes expired at `$3`, unless redeemed into a refresh
/// family that still lives: that row stays as a tombstone, so a replay of the code still revokes
/// the family (RFC 6749 §4.1.2) for as long as it exists.
pub(crate) const PURGE_CODES: &str = "DELETE FROM codes \
     WHERE code_hash > $1 AND code_hash <= $2 AND expires_at <= $3 AND (family IS NULL OR \
     NOT EXISTS (SELECT 1 FROM refresh_families f WHERE f.family = codes.family AND NOT f.revoked))";

/// After [`PURGE_CODES`], in the same window: the grants (personal data) of the expired codes
/// kept as tombstones are dropped; a replay does not need them.
pub(crate) const SCRUB_CODES: &str = "UPDATE codes SET grant_json = '{}' \
     WHERE code_hash > $1 AND code_hash <= $2 AND expires_at <= $3 AND grant_json <> '{}'";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shared statement.
    fn all() -> Vec<&'static str> {
        let mut all = vec![
            PUT_CODE,
            REDEEM_CODE,
            MARK_REPLAYED,
            LINK_FAMILY,
            REVOKE_FAMILY,
            PUT_FAMILY,
            REFRESH_STATE,
            REFRESH_GRANT_SQLITE,
            REFRESH_GRANT_WITH_METADATA_SQLITE,
            CONSENT,
            SAVE_CONSENT,
            CREATE_SESSION,
            SESSION,
            DELETE_SESSION,
            INCREMENT_LOGINS,
            USER_METADATA,
            PUT_USER_METADATA,
            KEYS,
            PUT_KEY,
            RETIRE_KEY,
            FAMILY_WINDOW,
            FAMILY_WINDOW_SQLITE,
            CODE_WINDOW,
            PURGE_CODES,
            SCRUB_CODES,
        ];
        all.extend(PURGE_EXPIRED);
        all.extend(PURGE_FAMILIES);
        all.extend(PURGE_FAMILIES_SQLITE);
        all
    }

    /// The `$N` parameters of `sql` in the order they first appear.
    fn first_appearances(sql: &str) -> Vec<usize> {
        let mut seen = Vec::new();
        for (i, _) in sql.match_indices('$') {
            let digits: String = sql[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let n: usize = digits.parse().expect("a numbered parameter");
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        seen
    }

    #[test]
    fn parameters_first_appear_in_order() {
        // The PostgreSQL spellings too (not for SQLite's schema; the store conformance tests run
        // them on PostgreSQL).
        for sql in all()
            .into_iter()
            .chain([REFRESH_GRANT, REFRESH_GRANT_WITH_METADATA_POSTGRES])
        {
            let seen = first_appearances(sql);
            let expected: Vec<usize> = (1..=seen.len()).collect();
            assert_eq!(seen, expected, "{sql}");
        }
    }

    /// SQLite prepares every statement over its migrated schema (PostgreSQL runs them all in the
    /// store conformance tests).
    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_prepares_every_statement() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        for script in super::super::migrate::SQLITE.scripts {
            c.execute_batch(script).unwrap();
        }
        for sql in all() {
            if let Err(e) = c.prepare(sql) {
                panic!("SQLite refuses {sql}: {e}");
            }
        }
    }
}

//! The store's statements on SQLite: each method hands a closure to the connection thread
//! ([`SqliteStore::read`] or [`SqliteStore::write`]).

use rusqlite::{params, Connection, OptionalExtension, Params, Row};

use super::{db, SqliteStore};
use crate::store::codec::{
    decode_grant, decode_metadata, encode_grant, encode_scopes, key_columns, merged_metadata,
    scopes_cover, session_columns, KeyColumns, SessionColumns,
};
use crate::store::{
    CodeRedemption, Committed, Grant, MetadataUpdates, Rotation, Session, StoreError, StoredKey,
};

/// Runs a statement that returns no rows; the number of rows changed.
pub(super) fn exec(c: &Connection, sql: &str, params: impl Params) -> Result<usize, StoreError> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map_err(db)
}

/// The first row, decoded by `f`, or `None` when there is none.
pub(super) fn optional<T>(
    c: &Connection,
    sql: &str,
    params: impl Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>, StoreError> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params, f).optional())
        .map_err(db)
}

/// The first row, decoded by `f`; no row is an error.
pub(super) fn one<T>(
    c: &Connection,
    sql: &str,
    params: impl Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params, f))
        .map_err(db)
}

/// Marks a family revoked (no-op when unknown).
fn revoke(c: &Connection, family: &str) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE refresh_families SET revoked = 1 WHERE family = ?",
        [family],
    )?;
    Ok(())
}

const METADATA: &str = "SELECT app_metadata, user_metadata FROM user_metadata WHERE user_id = ?";

impl SqliteStore {
    pub(crate) async fn put_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let code_hash = code_hash.to_string();
        let grant = encode_grant(grant)?;
        self.write(false, move |c| {
            exec(
                c,
                "INSERT INTO codes (code_hash, grant_json, expires_at) VALUES (?, ?, ?)",
                params![code_hash, grant, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<CodeRedemption, StoreError> {
        let code_hash = code_hash.to_string();
        self.write(false, move |c| redeem(c, &code_hash, now)).await
    }

    pub(crate) async fn redeem_code_early(
        &self,
        code_hash: &str,
        now: i64,
    ) -> (Result<CodeRedemption, StoreError>, Committed) {
        let code_hash = code_hash.to_string();
        self.write_early(move |c| redeem(c, &code_hash, now)).await
    }

    pub(crate) async fn link_code_family(
        &self,
        code_hash: &str,
        family: &str,
    ) -> Result<(), StoreError> {
        let code_hash = code_hash.to_string();
        let family = family.to_string();
        self.write(false, move |c| {
            let replayed: Option<i64> = optional(
                c,
                "UPDATE codes SET family = ? WHERE code_hash = ? RETURNING replayed",
                [&family, &code_hash],
                |r| r.get(0),
            )?;
            if replayed.unwrap_or(0) != 0 {
                revoke(c, &family)?;
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn put_refresh(
        &self,
        token_hash: &str,
        family: &str,
        grant: &Grant,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let token_hash = token_hash.to_string();
        let family = family.to_string();
        let grant = encode_grant(grant)?;
        self.write(true, move |c| {
            exec(
                c,
                "INSERT INTO refresh_families (family, grant_json) VALUES (?, ?) \
                 ON CONFLICT (family) DO UPDATE SET grant_json = excluded.grant_json",
                [&family, &grant],
            )?;
            exec(
                c,
                "INSERT INTO refresh_tokens (token_hash, family, expires_at) VALUES (?, ?, ?)",
                params![token_hash, family, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
    ) -> Result<Rotation, StoreError> {
        let old_hash = old_hash.to_string();
        let new_hash = new_hash.to_string();
        self.write(false, move |c| {
            rotate(c, &old_hash, &new_hash, now, new_expires_at)
        })
        .await
    }

    pub(crate) async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        let family = family.to_string();
        self.write(false, move |c| revoke(c, &family)).await
    }

    pub(crate) async fn refresh_grant(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        let token_hash = token_hash.to_string();
        let json: Option<String> = self
            .read(move |c| {
                optional(
                    c,
                    "SELECT f.grant_json FROM refresh_tokens t \
                     JOIN refresh_families f ON f.family = t.family \
                     WHERE t.token_hash = ?1 AND t.used_at IS NULL AND f.revoked = 0 \
                       AND (t.expires_at IS NULL OR t.expires_at > ?2)",
                    params![token_hash, now],
                    |r| r.get(0),
                )
            })
            .await?;
        json.as_deref().map(decode_grant).transpose()
    }

    pub(crate) async fn consent_covers(
        &self,
        user_id: &str,
        client_id: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<bool, StoreError> {
        let key = [user_id, client_id, audience].map(str::to_string);
        let stored: Option<String> = self
            .read(move |c| {
                optional(
                    c,
                    "SELECT scopes_json FROM consents \
                     WHERE user_id = ? AND client_id = ? AND audience = ?",
                    key,
                    |r| r.get(0),
                )
            })
            .await?;
        match stored {
            Some(json) => scopes_cover(&json, scopes),
            None => Ok(false),
        }
    }

    pub(crate) async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<(), StoreError> {
        let [user_id, client_id, audience] = [user_id, client_id, audience].map(str::to_string);
        let scopes = encode_scopes(scopes)?;
        self.write(false, move |c| {
            exec(
                c,
                "INSERT INTO consents (user_id, client_id, audience, scopes_json) \
                 VALUES (?, ?, ?, ?) \
                 ON CONFLICT (user_id, client_id, audience) \
                 DO UPDATE SET scopes_json = excluded.scopes_json",
                [user_id, client_id, audience, scopes],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn create_session(
        &self,
        session_hash: &str,
        user_id: &str,
        auth_time: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let (session_hash, user_id) = (session_hash.to_string(), user_id.to_string());
        self.write(false, move |c| {
            exec(
                c,
                "INSERT INTO sessions (session_hash, user_id, auth_time, expires_at) \
                 VALUES (?, ?, ?, ?)",
                params![session_hash, user_id, auth_time, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn session(
        &self,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        let session_hash = session_hash.to_string();
        self.read(move |c| {
            optional(
                c,
                concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM sessions WHERE session_hash = ? AND expires_at > ?"
                ),
                params![session_hash, now],
                |r| {
                    let row: SessionColumns = (r.get(0)?, r.get(1)?, r.get(2)?);
                    Ok(Session::from(row))
                },
            )
        })
        .await
    }

    pub(crate) async fn delete_session(&self, session_hash: &str) -> Result<(), StoreError> {
        let session_hash = session_hash.to_string();
        self.write(false, move |c| {
            exec(
                c,
                "DELETE FROM sessions WHERE session_hash = ?",
                [session_hash],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn increment_logins(&self, user_id: &str) -> Result<i64, StoreError> {
        let user_id = user_id.to_string();
        self.write(false, move |c| {
            one(
                c,
                "INSERT INTO login_counts (user_id, count) VALUES (?, 1) \
                 ON CONFLICT (user_id) DO UPDATE SET count = count + 1 \
                 RETURNING count",
                [user_id],
                |r| r.get(0),
            )
        })
        .await
    }

    pub(crate) async fn user_metadata(
        &self,
        user_id: &str,
    ) -> Result<Option<MetadataUpdates>, StoreError> {
        let user_id = user_id.to_string();
        let row: Option<(String, String)> = self
            .read(move |c| optional(c, METADATA, [user_id], |r| Ok((r.get(0)?, r.get(1)?))))
            .await?;
        row.map(|(a, u)| decode_metadata(&a, &u)).transpose()
    }

    pub(crate) async fn update_user_metadata(
        &self,
        user_id: &str,
        updates: &MetadataUpdates,
    ) -> Result<(), StoreError> {
        let (user_id, updates) = (user_id.to_string(), updates.clone());
        // The single writer serializes read-modify-write, so concurrent logins of one user
        // merge instead of losing an update.
        self.write(false, move |c| {
            let row = optional(c, METADATA, [&user_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let (a, u) = merged_metadata(row, &updates)?;
            exec(
                c,
                "INSERT INTO user_metadata (user_id, app_metadata, user_metadata) \
                 VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET \
                 app_metadata = excluded.app_metadata, user_metadata = excluded.user_metadata",
                [user_id, a, u],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare_cached(concat!(
                    "SELECT ",
                    key_columns!(),
                    " FROM signing_keys ORDER BY created_at, kid"
                ))
                .map_err(db)?;
            let rows = s
                .query_map([], |r| {
                    let row: KeyColumns = (
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    );
                    Ok(StoredKey::from(row))
                })
                .map_err(db)?;
            rows.map(|r| r.map_err(db)).collect()
        })
        .await
    }

    pub(crate) async fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let key = key.clone();
        self.write(false, move |c| {
            exec(
                c,
                concat!(
                    "INSERT INTO signing_keys (",
                    key_columns!(),
                    ") VALUES (?, ?, ?, ?, ?, ?)"
                ),
                params![
                    key.kid,
                    key.alg,
                    key.private_pkcs8_der,
                    key.created_at,
                    key.activates_at,
                    key.retires_at
                ],
            )
            .map_err(|e| match e {
                StoreError::Conflict { source, .. } => {
                    StoreError::conflict(format!("signing key {:?}", key.kid), source)
                }
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn retire_key(&self, kid: &str, retires_at: i64) -> Result<(), StoreError> {
        let kid = kid.to_string();
        self.write(false, move |c| {
            let changed = exec(
                c,
                "UPDATE signing_keys SET retires_at = ? WHERE kid = ?",
                params![retires_at, kid],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("signing key {kid:?}")));
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.write(false, move |c| purge(c, now)).await
    }
}

/// Marks a code redeemed, or tells why it cannot be; a replay revokes the linked family.
fn redeem(c: &Connection, code_hash: &str, now: i64) -> Result<CodeRedemption, StoreError> {
    let redeemed: Option<String> = optional(
        c,
        "UPDATE codes SET redeemed_at = ?1 \
         WHERE code_hash = ?2 AND redeemed_at IS NULL AND expires_at > ?1 \
         RETURNING grant_json",
        params![now, code_hash],
        |r| r.get(0),
    )?;
    if let Some(json) = redeemed {
        return Ok(CodeRedemption::Redeemed(decode_grant(&json)?));
    }
    let row: Option<(Option<i64>, Option<String>)> = optional(
        c,
        "SELECT redeemed_at, family FROM codes WHERE code_hash = ?",
        [code_hash],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let Some((redeemed_at, family)) = row else {
        return Ok(CodeRedemption::Unknown);
    };
    if redeemed_at.is_none() {
        return Ok(CodeRedemption::Expired);
    }
    // Remember the replay so a family linked later is revoked too.
    exec(
        c,
        "UPDATE codes SET replayed = 1 WHERE code_hash = ?",
        [code_hash],
    )?;
    if let Some(family) = &family {
        revoke(c, family)?;
    }
    Ok(CodeRedemption::Replayed { family })
}

/// One rotation: marks the old token used and stores the new one, or tells why not.
fn rotate(
    c: &Connection,
    old_hash: &str,
    new_hash: &str,
    now: i64,
    new_expires_at: Option<i64>,
) -> Result<Rotation, StoreError> {
    // The common case in one statement: mark a valid token used and read its family.
    let rotated: Option<(String, String)> = optional(
        c,
        "UPDATE refresh_tokens SET used_at = ?1 \
         WHERE token_hash = ?2 AND used_at IS NULL \
           AND (expires_at IS NULL OR expires_at > ?1) \
           AND NOT EXISTS (SELECT 1 FROM refresh_families f \
                           WHERE f.family = refresh_tokens.family AND f.revoked <> 0) \
         RETURNING family, (SELECT grant_json FROM refresh_families f \
                            WHERE f.family = refresh_tokens.family)",
        params![now, old_hash],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if let Some((family, json)) = rotated {
        let done = decode_grant(&json).and_then(|grant| {
            exec(
                c,
                "INSERT INTO refresh_tokens (token_hash, family, expires_at) VALUES (?, ?, ?)",
                params![new_hash, family, new_expires_at],
            )
            .map(|_| grant)
        });
        return match done {
            Ok(grant) => Ok(Rotation::Rotated { grant, family }),
            Err(e) => {
                // Undo the mark so the old token stays valid (cheaper than a savepoint around
                // every rotation).
                exec(
                    c,
                    "UPDATE refresh_tokens SET used_at = NULL WHERE token_hash = ?",
                    [old_hash],
                )?;
                Err(e)
            }
        };
    }
    let row: Option<(String, Option<i64>, i64)> = optional(
        c,
        "SELECT t.family, t.used_at, f.revoked \
         FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family \
         WHERE t.token_hash = ?",
        [old_hash],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let Some((family, used_at, revoked)) = row else {
        return Ok(Rotation::Unknown);
    };
    if revoked != 0 {
        return Ok(Rotation::Revoked);
    }
    if used_at.is_some() {
        revoke(c, &family)?;
        return Ok(Rotation::Reused { family });
    }
    Ok(Rotation::Expired)
}

/// Deletes what expired at `now`; the number of rows deleted.
fn purge(c: &Connection, now: i64) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for (sql, bind_now) in [
        ("DELETE FROM sessions WHERE expires_at <= ?", true),
        (
            "DELETE FROM refresh_tokens WHERE expires_at IS NOT NULL AND expires_at <= ?",
            true,
        ),
        (
            "DELETE FROM refresh_tokens WHERE family IN \
             (SELECT family FROM refresh_families WHERE revoked <> 0)",
            false,
        ),
        (
            "DELETE FROM refresh_families WHERE revoked <> 0 OR NOT EXISTS \
             (SELECT 1 FROM refresh_tokens t WHERE t.family = refresh_families.family)",
            false,
        ),
        // An expired code goes, unless it was redeemed into a refresh family that still lives:
        // that row stays as a tombstone, so a replay of the code still revokes the family (RFC
        // 6749 §4.1.2) for as long as it exists. Its grant (personal data) is not needed for
        // that and is dropped.
        (
            "DELETE FROM codes WHERE expires_at <= ? AND (family IS NULL OR NOT EXISTS \
             (SELECT 1 FROM refresh_families f WHERE f.family = codes.family AND f.revoked = 0))",
            true,
        ),
    ] {
        let changed = if bind_now {
            exec(c, sql, [now])?
        } else {
            exec(c, sql, [])?
        };
        deleted += changed as u64;
    }
    exec(
        c,
        "UPDATE codes SET grant_json = '{}' WHERE expires_at <= ? AND grant_json <> '{}'",
        [now],
    )?;
    Ok(deleted)
}

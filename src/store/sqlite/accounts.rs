//! Consents, login sessions and counters, user metadata and signing keys on SQLite.

use rusqlite::params;

use super::sql::{exec, one, optional};
use super::{db, SqliteStore};
use crate::store::codec::{
    decode_metadata, encode_scopes, key_columns, merged_metadata, scopes_cover, session_columns,
    KeyColumns, SessionColumns,
};
use crate::store::{MetadataUpdates, Session, StoreError, StoredKey};

const METADATA: &str = "SELECT app_metadata, user_metadata FROM user_metadata WHERE user_id = ?";

impl SqliteStore {
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
}

//! Consents, login sessions and counters, user metadata and signing keys on SQLite.

use rusqlite::{params, Connection};

use super::stmt::{exec, one, optional};
use super::{db, SqliteStore};
use crate::store::codec::{
    decode_metadata, encode_scopes, merged_metadata, scopes_cover, KeyColumns, SessionColumns,
};
use crate::store::sql;
use crate::store::{MetadataUpdates, Session, StoreError, StoredKey};

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
            .read(move |c| optional(c, sql::CONSENT, key, |r| r.get(0)))
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
            exec(c, sql::SAVE_CONSENT, [user_id, client_id, audience, scopes])?;
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
                sql::CREATE_SESSION,
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
            optional(c, sql::SESSION, params![session_hash, now], |r| {
                let row: SessionColumns = (r.get(0)?, r.get(1)?, r.get(2)?);
                Ok(Session::from(row))
            })
        })
        .await
    }

    pub(crate) async fn delete_session(&self, session_hash: &str) -> Result<(), StoreError> {
        let session_hash = session_hash.to_string();
        self.write(false, move |c| {
            exec(c, sql::DELETE_SESSION, [session_hash])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn increment_logins(&self, user_id: &str) -> Result<i64, StoreError> {
        let user_id = user_id.to_string();
        self.write(false, move |c| {
            one(c, sql::INCREMENT_LOGINS, [user_id], |r| r.get(0))
        })
        .await
    }

    pub(crate) async fn user_metadata(
        &self,
        user_id: &str,
    ) -> Result<Option<MetadataUpdates>, StoreError> {
        let user_id = user_id.to_string();
        self.read(move |c| stored_metadata(c, &user_id)).await
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
            let row = optional(c, sql::USER_METADATA, [&user_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            let (a, u) = merged_metadata(row, &updates)?;
            exec(c, sql::PUT_USER_METADATA, [a, u, user_id])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.read(|c| {
            let mut s = c.prepare_cached(sql::KEYS).map_err(db)?;
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
                sql::PUT_KEY,
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
            let changed = exec(c, sql::RETIRE_KEY, params![retires_at, kid])?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("signing key {kid:?}")));
            }
            Ok(())
        })
        .await
    }
}

/// The metadata rules stored for `user_id`, `None` when none: for [`SqliteStore::user_metadata`]
/// and, inside its transaction, the token endpoint's rotation (`tokens.rs`).
pub(super) fn stored_metadata(
    c: &Connection,
    user_id: &str,
) -> Result<Option<MetadataUpdates>, StoreError> {
    let row: Option<(String, String)> = optional(c, sql::USER_METADATA, [user_id], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    row.map(|(a, u)| decode_metadata(&a, &u)).transpose()
}

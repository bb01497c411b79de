//! The PostgreSQL engine, for several instances sharing one database.
//!
//! Single use comes from conditional `UPDATE … WHERE used_at IS NULL RETURNING …`: PostgreSQL
//! locks the row, and a concurrent updater re-checks the condition against the committed row, so
//! exactly one of N concurrent callers sees its row. Each write that touches several rows runs in
//! one transaction. Migrations and first-key generation are serialized across instances with
//! transaction-scoped advisory locks, keyed by the schema so that separate schemas (one per
//! tenant or test run) do not wait on each other.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::codec::{decode_grant, encode_grant, encode_scopes, scopes_cover};
use super::codec::{key_columns, session_columns, KeyColumns, SessionColumns};
use super::{CodeRedemption, Grant, MetadataUpdates, Rotation, Session, StoreError, StoredKey};

/// Connections per instance.
const MAX_CONNECTIONS: u32 = 16;

/// PostgreSQL store: a connection pool.
#[derive(Clone)]
pub(crate) struct PgStore {
    pool: PgPool,
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e, transient)
}

/// SQLSTATE class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now), 53300
/// (too many connections).
fn transient(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || code == "53300"
}

/// Takes an advisory lock for this transaction, named by `purpose` within the current schema.
async fn advisory_lock(
    tx: &mut Transaction<'_, Postgres>,
    purpose: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '/' || $1))")
        .bind(purpose)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Marks a family revoked (no-op when unknown).
async fn revoke(tx: &mut Transaction<'_, Postgres>, family: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE refresh_families SET revoked = TRUE WHERE family = $1 AND NOT revoked")
        .bind(family)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

impl PgStore {
    /// Connects to `postgres://…` and migrates the schema (the first schema of `search_path`).
    pub(crate) async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            message: format!("{}: {e}", redact(url)),
            source: Some(std::sync::Arc::new(e)),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| db(e).in_context(format_args!("cannot connect to {}", redact(url))))?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(db)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        advisory_lock(&mut tx, "claimrules_migrations").await?;
        super::migrate::run::<Postgres>(&mut tx, &super::migrate::POSTGRES, db).await?;
        tx.commit().await.map_err(db)
    }

    pub(crate) async fn put_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO codes (code_hash, grant_json, expires_at) VALUES ($1, $2, $3)")
            .bind(code_hash)
            .bind(encode_grant(grant)?)
            .bind(expires_at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<CodeRedemption, StoreError> {
        let redeemed: Option<String> = sqlx::query_scalar(
            "UPDATE codes SET redeemed_at = $1 \
             WHERE code_hash = $2 AND redeemed_at IS NULL AND expires_at > $1 \
             RETURNING grant_json",
        )
        .bind(now)
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(json) = redeemed {
            return Ok(CodeRedemption::Redeemed(decode_grant(&json)?));
        }
        let mut tx = self.begin().await?;
        let row =
            sqlx::query("SELECT redeemed_at, family FROM codes WHERE code_hash = $1 FOR UPDATE")
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let Some(row) = row else {
            return Ok(CodeRedemption::Unknown);
        };
        let redeemed_at: Option<i64> = row.try_get(0).map_err(db)?;
        if redeemed_at.is_none() {
            return Ok(CodeRedemption::Expired);
        }
        let family: Option<String> = row.try_get(1).map_err(db)?;
        // Remember the replay so a family linked later is revoked too.
        sqlx::query("UPDATE codes SET replayed = TRUE WHERE code_hash = $1")
            .bind(code_hash)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if let Some(family) = &family {
            revoke(&mut tx, family).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(CodeRedemption::Replayed { family })
    }

    pub(crate) async fn link_code_family(
        &self,
        code_hash: &str,
        family: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let replayed: Option<bool> = sqlx::query_scalar(
            "UPDATE codes SET family = $1 WHERE code_hash = $2 RETURNING replayed",
        )
        .bind(family)
        .bind(code_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if replayed == Some(true) {
            revoke(&mut tx, family).await?;
        }
        tx.commit().await.map_err(db)
    }

    pub(crate) async fn put_refresh(
        &self,
        token_hash: &str,
        family: &str,
        grant: &Grant,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let grant = encode_grant(grant)?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO refresh_families (family, grant_json) VALUES ($1, $2) \
             ON CONFLICT (family) DO UPDATE SET grant_json = excluded.grant_json",
        )
        .bind(family)
        .bind(grant)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(family)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    pub(crate) async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
    ) -> Result<Rotation, StoreError> {
        // The common case is one statement, hence one atomic transaction and one round trip:
        // mark a valid token used, insert its successor in the same family, read the grant. If
        // the insert fails (duplicate new hash), the mark is undone with it.
        let rotated = sqlx::query(
            "WITH old AS ( \
                 UPDATE refresh_tokens t SET used_at = $1 \
                 FROM refresh_families f \
                 WHERE t.token_hash = $2 AND t.used_at IS NULL \
                   AND (t.expires_at IS NULL OR t.expires_at > $1) \
                   AND f.family = t.family AND NOT f.revoked \
                 RETURNING t.family, f.grant_json), \
             new AS ( \
                 INSERT INTO refresh_tokens (token_hash, family, expires_at) \
                 SELECT $3, family, $4 FROM old) \
             SELECT family, grant_json FROM old",
        )
        .bind(now)
        .bind(old_hash)
        .bind(new_hash)
        .bind(new_expires_at)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(row) = rotated {
            let family: String = row.try_get(0).map_err(db)?;
            let json: String = row.try_get(1).map_err(db)?;
            return Ok(Rotation::Rotated {
                grant: decode_grant(&json)?,
                family,
            });
        }
        // Not rotated: a token's state only moves forward (used, revoked, expired), so reading it
        // after the failed update classifies it correctly.
        let row = sqlx::query(
            "SELECT t.family, t.used_at, f.revoked \
             FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family \
             WHERE t.token_hash = $1",
        )
        .bind(old_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(Rotation::Unknown);
        };
        let family: String = row.try_get(0).map_err(db)?;
        let used_at: Option<i64> = row.try_get(1).map_err(db)?;
        let revoked: bool = row.try_get(2).map_err(db)?;
        if revoked {
            return Ok(Rotation::Revoked);
        }
        if used_at.is_some() {
            self.revoke_family(&family).await?;
            return Ok(Rotation::Reused { family });
        }
        Ok(Rotation::Expired)
    }

    pub(crate) async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_families SET revoked = TRUE WHERE family = $1 AND NOT revoked")
            .bind(family)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn refresh_grant(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        let json: Option<String> = sqlx::query_scalar(
            "SELECT f.grant_json FROM refresh_tokens t \
             JOIN refresh_families f ON f.family = t.family \
             WHERE t.token_hash = $1 AND t.used_at IS NULL AND NOT f.revoked \
               AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        json.as_deref().map(decode_grant).transpose()
    }

    pub(crate) async fn consent_covers(
        &self,
        user_id: &str,
        client_id: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<bool, StoreError> {
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT scopes_json FROM consents \
             WHERE user_id = $1 AND client_id = $2 AND audience = $3",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(audience)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
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
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, audience, scopes_json) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, client_id, audience) \
             DO UPDATE SET scopes_json = excluded.scopes_json",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(audience)
        .bind(encode_scopes(scopes)?)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn create_session(
        &self,
        session_hash: &str,
        user_id: &str,
        auth_time: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (session_hash, user_id, auth_time, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(session_hash)
        .bind(user_id)
        .bind(auth_time)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn session(
        &self,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        let row: Option<SessionColumns> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE session_hash = $1 AND expires_at > $2"
        ))
        .bind(session_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(Session::from))
    }

    pub(crate) async fn delete_session(&self, session_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE session_hash = $1")
            .bind(session_hash)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn increment_logins(&self, user_id: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO login_counts (user_id, count) VALUES ($1, 1) \
             ON CONFLICT (user_id) DO UPDATE SET count = login_counts.count + 1 \
             RETURNING count",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    pub(crate) async fn user_metadata(
        &self,
        user_id: &str,
    ) -> Result<Option<MetadataUpdates>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT app_metadata, user_metadata FROM user_metadata WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|(a, u)| super::codec::decode_metadata(&a, &u))
            .transpose()
    }

    pub(crate) async fn update_user_metadata(
        &self,
        user_id: &str,
        updates: &MetadataUpdates,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The row lock makes concurrent logins of one user (on any instance) merge in turn.
        sqlx::query("INSERT INTO user_metadata (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT app_metadata, user_metadata FROM user_metadata WHERE user_id = $1 FOR UPDATE",
        )
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let (a, u) = super::codec::merged_metadata(row, updates)?;
        sqlx::query(
            "UPDATE user_metadata SET app_metadata = $2, user_metadata = $3 WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(a)
        .bind(u)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows: Vec<KeyColumns> = sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM signing_keys ORDER BY created_at, kid"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(StoredKey::from).collect())
    }

    pub(crate) async fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys \
             (kid, alg, private_pkcs8_der, created_at, activates_at, retires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_pkcs8_der)
        .bind(key.created_at)
        .bind(key.activates_at)
        .bind(key.retires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match db(e) {
            StoreError::Conflict { source, .. } => {
                StoreError::conflict(format!("signing key {:?}", key.kid), source)
            }
            other => other,
        })?;
        Ok(())
    }

    pub(crate) async fn retire_key(&self, kid: &str, retires_at: i64) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE signing_keys SET retires_at = $1 WHERE kid = $2")
            .bind(retires_at)
            .bind(kid)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("signing key {kid:?}")));
        }
        Ok(())
    }

    pub(crate) async fn with_key_lock<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        // The lock lives as long as this transaction; if `f` fails or this future is dropped,
        // the transaction rolls back and the lock is released with it. `f` itself uses other
        // pooled connections.
        let mut tx = self.begin().await?;
        advisory_lock(&mut tx, "claimrules_keys").await?;
        let result = f().await;
        match result {
            Ok(value) => {
                tx.commit().await.map_err(db)?;
                Ok(value)
            }
            Err(e) => {
                // Rolling back only releases the lock; the closure's error is what matters.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    pub(crate) async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let mut deleted = 0;
        for (sql, bind_now) in [
            ("DELETE FROM sessions WHERE expires_at <= $1", true),
            (
                "DELETE FROM refresh_tokens WHERE expires_at IS NOT NULL AND expires_at <= $1",
                true,
            ),
            (
                "DELETE FROM refresh_tokens WHERE family IN \
                 (SELECT family FROM refresh_families WHERE revoked)",
                false,
            ),
            (
                "DELETE FROM refresh_families f WHERE f.revoked OR NOT EXISTS \
                 (SELECT 1 FROM refresh_tokens t WHERE t.family = f.family)",
                false,
            ),
            // An expired code goes, unless it was redeemed into a refresh family that still
            // lives: that row stays as a tombstone, so a replay of the code still revokes the
            // family (RFC 6749 §4.1.2) for as long as it exists. Its grant (personal data) is
            // not needed for that and is dropped.
            (
                "DELETE FROM codes c WHERE c.expires_at <= $1 AND (c.family IS NULL OR NOT EXISTS \
                 (SELECT 1 FROM refresh_families f WHERE f.family = c.family AND NOT f.revoked))",
                true,
            ),
        ] {
            let mut query = sqlx::query(sql);
            if bind_now {
                query = query.bind(now);
            }
            deleted += query.execute(&mut *tx).await.map_err(db)?.rows_affected();
        }
        sqlx::query(
            "UPDATE codes SET grant_json = '{}' WHERE expires_at <= $1 AND grant_json <> '{}'",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    super::redact_url(url)
}

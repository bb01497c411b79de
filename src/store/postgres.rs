//! The PostgreSQL engine, for several instances sharing one database.
//!
//! Single use comes from conditional `UPDATE … WHERE used_at IS NULL RETURNING …`: PostgreSQL
//! locks the row, and a concurrent updater re-checks the condition against the committed row, so
//! exactly one of N concurrent callers sees its row. Each write that touches several rows runs in
//! one transaction. Migrations and first-key generation are serialized across instances with
//! transaction-scoped advisory locks, keyed by the schema so that separate schemas (one per
//! tenant or test run) do not wait on each other. The statements both dialects share are in
//! [`super::sql`]; the ones here need PostgreSQL (row locks, data-modifying `WITH`).

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgExecutor, PgPool, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{Postgres, Transaction};

use super::codec::{decode_grant, decode_grant_with_metadata, encode_grant};
use super::codec::{decode_metadata, merged_metadata, KeyColumns, SessionColumns};
use super::codec::{encode_scopes, scopes_cover};
use super::purge::{self, PurgeStep, Step, StepDone};
use super::{redact_url, sql, CodeRedemption, Grant, GrantWithMetadata, MetadataUpdates};
use super::{Rotation, Session};
use super::{StoreError, StoredKey};

/// Connections per instance.
const MAX_CONNECTIONS: u32 = 16;

/// Serializes callers across instances for one purpose (`$1`) within the current schema, until
/// the transaction ends.
const ADVISORY_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '/' || $1))";

/// A code's state after a failed redemption (`$1` hash): `redeemed_at`, `family`; the row stays
/// locked until the transaction ends.
const CODE_STATE_FOR_UPDATE: &str =
    "SELECT redeemed_at, family FROM codes WHERE code_hash = $1 FOR UPDATE";

/// [`sql::USER_METADATA`], locking the row until the transaction ends.
const USER_METADATA_FOR_UPDATE: &str =
    "SELECT app_metadata, user_metadata FROM user_metadata WHERE user_id = $1 FOR UPDATE";

/// Makes sure user `$1` has a metadata row to lock.
const ENSURE_USER_METADATA: &str =
    "INSERT INTO user_metadata (user_id) VALUES ($1) ON CONFLICT DO NOTHING";

/// Stores refresh token `$1` in family `$2`, expiring at `$3` (or never).
const PUT_REFRESH: &str =
    "INSERT INTO refresh_tokens (token_hash, family, expires_at) VALUES ($1, $2, $3)";

/// Undoes the rotation of token `$1` that made successor `$2`, in one statement: the successor
/// is deleted and, only if it existed, the old token is unused again.
const UNDO_ROTATION: &str = "WITH gone AS ( \
         DELETE FROM refresh_tokens WHERE token_hash = $2 RETURNING 1) \
     UPDATE refresh_tokens SET used_at = NULL \
     WHERE token_hash = $1 AND EXISTS (SELECT 1 FROM gone)";

/// Rotates refresh token `$2` at `$1` in one statement, hence one atomic transaction and one
/// round trip: marks it used if valid, inserts its successor `$3` (expiring at `$4`) in the same
/// family, returns the family and `$grant`. If the insert fails (duplicate new hash), the mark
/// is undone with it.
macro_rules! rotate_sql {
    ($grant:literal) => {
        concat!(
            "WITH old AS ( \
                 UPDATE refresh_tokens t SET used_at = $1 \
                 FROM refresh_families f \
                 WHERE t.token_hash = $2 AND t.used_at IS NULL \
                   AND (t.expires_at IS NULL OR t.expires_at > $1) \
                   AND f.family = t.family AND NOT f.revoked \
                 RETURNING t.family, ",
            $grant,
            " AS grant_json), \
             new AS ( \
                 INSERT INTO refresh_tokens (token_hash, family, expires_at) \
                 SELECT $3, family, $4 FROM old) \
             SELECT family, grant_json FROM old"
        )
    };
}

/// [`rotate_sql!`] returning the family's grant JSON.
const ROTATE: &str = rotate_sql!("f.grant_json");
/// [`rotate_sql!`] returning NULL for the grant (`Store::rotate_refresh_without_grant`).
const ROTATE_WITHOUT_GRANT: &str = rotate_sql!("NULL::text");

/// A statement with its parameters bound.
type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// PostgreSQL store: a connection pool.
#[derive(Clone)]
pub(crate) struct PgStore {
    pool: PgPool,
}

/// Maps a sqlx-postgres error (see [`StoreError::from_sqlx`]).
fn db(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e, transient)
}

/// SQLSTATE class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now), 53300
/// (too many connections).
fn transient(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || code == "53300"
}

/// Runs `query` on the pool or in a transaction; returns the number of rows it changed.
async fn exec<'c>(on: impl PgExecutor<'c>, query: PgQuery<'_>) -> Result<u64, StoreError> {
    Ok(query.execute(on).await.map_err(db)?.rows_affected())
}

/// Takes an advisory lock for this transaction, named by `purpose` within the current schema.
async fn advisory_lock(
    tx: &mut Transaction<'_, Postgres>,
    purpose: &str,
) -> Result<(), StoreError> {
    exec(&mut **tx, sqlx::query(ADVISORY_LOCK).bind(purpose)).await?;
    Ok(())
}

impl PgStore {
    /// Connects to `postgres://…` and migrates the schema (the first schema of `search_path`).
    pub(crate) async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            message: format!("{}: {e}", redact_url(url)),
            source: Some(Arc::new(e)),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| db(e).in_context(format_args!("cannot connect to {}", redact_url(url))))?;
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
        let query = sqlx::query(sql::PUT_CODE)
            .bind(code_hash)
            .bind(encode_grant(grant)?)
            .bind(expires_at);
        exec(&self.pool, query).await?;
        Ok(())
    }

    pub(crate) async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<CodeRedemption, StoreError> {
        let redeemed: Option<String> = sqlx::query_scalar(sql::REDEEM_CODE)
            .bind(now)
            .bind(code_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        if let Some(json) = redeemed {
            return Ok(CodeRedemption::Redeemed(decode_grant(&json)?));
        }
        let mut tx = self.begin().await?;
        let state: Option<(Option<i64>, Option<String>)> = sqlx::query_as(CODE_STATE_FOR_UPDATE)
            .bind(code_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some((redeemed_at, family)) = state else {
            return Ok(CodeRedemption::Unknown);
        };
        if redeemed_at.is_none() {
            return Ok(CodeRedemption::Expired);
        }
        exec(&mut *tx, sqlx::query(sql::MARK_REPLAYED).bind(code_hash)).await?;
        if let Some(family) = &family {
            exec(&mut *tx, sqlx::query(sql::REVOKE_FAMILY).bind(family)).await?;
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
        let replayed: Option<bool> = sqlx::query_scalar(sql::LINK_FAMILY)
            .bind(family)
            .bind(code_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if replayed == Some(true) {
            exec(&mut *tx, sqlx::query(sql::REVOKE_FAMILY).bind(family)).await?;
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
        exec(
            &mut *tx,
            sqlx::query(sql::PUT_FAMILY).bind(family).bind(grant),
        )
        .await?;
        let token = sqlx::query(PUT_REFRESH)
            .bind(token_hash)
            .bind(family)
            .bind(expires_at);
        exec(&mut *tx, token).await?;
        tx.commit().await.map_err(db)
    }

    pub(crate) async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
    ) -> Result<Rotation, StoreError> {
        let decode = |json: Option<String>| decode_grant(&json.unwrap_or_default());
        self.rotate(ROTATE, old_hash, new_hash, now, new_expires_at, decode)
            .await
    }

    pub(crate) async fn rotate_refresh_without_grant(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
    ) -> Result<Rotation<()>, StoreError> {
        self.rotate(
            ROTATE_WITHOUT_GRANT,
            old_hash,
            new_hash,
            now,
            new_expires_at,
            |_| Ok(()),
        )
        .await
    }

    /// One rotation by `statement` ([`rotate_sql!`]); `grant` makes what is returned of the
    /// grant column.
    async fn rotate<G>(
        &self,
        statement: &str,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
        grant: fn(Option<String>) -> Result<G, StoreError>,
    ) -> Result<Rotation<G>, StoreError> {
        let rotated: Option<(String, Option<String>)> = sqlx::query_as(statement)
            .bind(now)
            .bind(old_hash)
            .bind(new_hash)
            .bind(new_expires_at)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        if let Some((family, json)) = rotated {
            return Ok(Rotation::Rotated {
                grant: grant(json)?,
                family,
            });
        }
        self.not_rotated(old_hash).await
    }

    /// Why a token was not rotated. A token's state only moves forward (used, revoked,
    /// expired), so reading it after the failed update classifies it correctly; a used one
    /// revokes its family (reuse).
    async fn not_rotated<G>(&self, old_hash: &str) -> Result<Rotation<G>, StoreError> {
        let state: Option<(String, Option<i64>, bool)> = sqlx::query_as(sql::REFRESH_STATE)
            .bind(old_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some((family, used_at, revoked)) = state else {
            return Ok(Rotation::Unknown);
        };
        if revoked {
            return Ok(Rotation::Revoked);
        }
        if used_at.is_some() {
            self.revoke_family(&family).await?;
            return Ok(Rotation::Reused { family });
        }
        Ok(Rotation::Expired)
    }

    /// [`Store::rotate_refresh_early`](super::Store::rotate_refresh_early) on PostgreSQL: the
    /// grant and metadata are read first (an invalid token is told apart as a rotation does, a
    /// token of another client is left as it was), then the token is rotated; a rotation lost to
    /// a concurrent one tells why.
    pub(crate) async fn rotate_refresh_checked(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
        client_id: &str,
    ) -> Result<Rotation<GrantWithMetadata>, StoreError> {
        let Some(found) = self.refresh_grant_with_metadata(old_hash, now).await? else {
            return self.not_rotated(old_hash).await;
        };
        if found.0.client_id != client_id {
            return Ok(Rotation::OtherClient);
        }
        let rotation = self
            .rotate_refresh_without_grant(old_hash, new_hash, now, new_expires_at)
            .await?;
        Ok(rotation.map_grant(|()| found))
    }

    pub(crate) async fn undo_rotation(
        &self,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<(), StoreError> {
        exec(
            &self.pool,
            sqlx::query(UNDO_ROTATION).bind(old_hash).bind(new_hash),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        exec(&self.pool, sqlx::query(sql::REVOKE_FAMILY).bind(family)).await?;
        Ok(())
    }

    pub(crate) async fn refresh_grant(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        let json: Option<String> = sqlx::query_scalar(sql::REFRESH_GRANT)
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        json.as_deref().map(decode_grant).transpose()
    }

    pub(crate) async fn refresh_grant_with_metadata(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<GrantWithMetadata>, StoreError> {
        let row: Option<(String, Option<String>, Option<String>)> =
            sqlx::query_as(sql::REFRESH_GRANT_WITH_METADATA_POSTGRES)
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.map(|(g, a, u)| decode_grant_with_metadata(&g, a.as_deref(), u.as_deref()))
            .transpose()
    }

    pub(crate) async fn consent_covers(
        &self,
        user_id: &str,
        client_id: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<bool, StoreError> {
        let stored: Option<String> = sqlx::query_scalar(sql::CONSENT)
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
        let query = sqlx::query(sql::SAVE_CONSENT)
            .bind(user_id)
            .bind(client_id)
            .bind(audience)
            .bind(encode_scopes(scopes)?);
        exec(&self.pool, query).await?;
        Ok(())
    }

    pub(crate) async fn create_session(
        &self,
        session_hash: &str,
        user_id: &str,
        auth_time: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let query = sqlx::query(sql::CREATE_SESSION)
            .bind(session_hash)
            .bind(user_id)
            .bind(auth_time)
            .bind(expires_at);
        exec(&self.pool, query).await?;
        Ok(())
    }

    pub(crate) async fn session(
        &self,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        let row: Option<SessionColumns> = sqlx::query_as(sql::SESSION)
            .bind(session_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(Session::from))
    }

    pub(crate) async fn delete_session(&self, session_hash: &str) -> Result<(), StoreError> {
        exec(
            &self.pool,
            sqlx::query(sql::DELETE_SESSION).bind(session_hash),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn increment_logins(&self, user_id: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar(sql::INCREMENT_LOGINS)
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    pub(crate) async fn user_metadata(
        &self,
        user_id: &str,
    ) -> Result<Option<MetadataUpdates>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(sql::USER_METADATA)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|(a, u)| decode_metadata(&a, &u)).transpose()
    }

    pub(crate) async fn update_user_metadata(
        &self,
        user_id: &str,
        updates: &MetadataUpdates,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // The row lock makes concurrent logins of one user (on any instance) merge in turn.
        exec(&mut *tx, sqlx::query(ENSURE_USER_METADATA).bind(user_id)).await?;
        let row: Option<(String, String)> = sqlx::query_as(USER_METADATA_FOR_UPDATE)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let (app, user) = merged_metadata(row, updates)?;
        let query = sqlx::query(sql::PUT_USER_METADATA)
            .bind(app)
            .bind(user)
            .bind(user_id);
        exec(&mut *tx, query).await?;
        tx.commit().await.map_err(db)
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        exec(&self.pool, sqlx::query("SELECT 1")).await?;
        Ok(())
    }

    pub(crate) async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows: Vec<KeyColumns> = sqlx::query_as(sql::KEYS)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(StoredKey::from).collect())
    }

    pub(crate) async fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let query = sqlx::query(sql::PUT_KEY)
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_pkcs8_der)
            .bind(key.created_at)
            .bind(key.activates_at)
            .bind(key.retires_at);
        match exec(&self.pool, query).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { source, .. }) => Err(StoreError::conflict(
                format!("signing key {:?}", key.kid),
                source,
            )),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn retire_key(&self, kid: &str, retires_at: i64) -> Result<(), StoreError> {
        let query = sqlx::query(sql::RETIRE_KEY).bind(retires_at).bind(kid);
        if exec(&self.pool, query).await? == 0 {
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
        purge::purge(self, now).await
    }
}

impl PurgeStep for PgStore {
    /// Each statement commits on its own: a step needs no snapshot of its own, and short
    /// transactions keep row locks and bloat small.
    async fn purge_step(&self, step: Step, now: i64) -> Result<StepDone, StoreError> {
        match step {
            Step::Expired(statement) => Ok(StepDone {
                deleted: exec(
                    &self.pool,
                    sqlx::query(statement).bind(now).bind(purge::BATCH),
                )
                .await?,
                last: None,
            }),
            Step::Window { of, after } => {
                let last: Option<String> = sqlx::query_scalar(of.select())
                    .bind(&after)
                    .bind(purge::BATCH)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db)?;
                let Some(last) = last else {
                    return Ok(StepDone::default());
                };
                let mut deleted = 0;
                for write in of.writes() {
                    let mut query = sqlx::query(write.sql).bind(&after).bind(&last);
                    if write.binds_now {
                        query = query.bind(now);
                    }
                    let changed = exec(&self.pool, query).await?;
                    if write.deletes {
                        deleted += changed;
                    }
                }
                Ok(StepDone {
                    deleted,
                    last: Some(last),
                })
            }
        }
    }
}

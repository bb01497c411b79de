//! The SQLite engine.
//!
//! Settings: WAL (readers never block the writer), `synchronous = FULL` (the WAL is fsynced at
//! every commit, so a write acknowledged to a caller survives a crash of the process and of the
//! machine), `busy_timeout` 5 s, foreign keys on.
//!
//! Writes go through one writer task that owns the only read-write connection and commits
//! them in groups ([`writer`]); reads use a small pool of read-only connections.

mod writer;

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use tokio::sync::Mutex;

use self::writer::Writer;
use super::codec::{decode_grant, encode_grant, encode_scopes, scopes_cover};
use super::codec::{key_columns, session_columns, KeyColumns, SessionColumns};
use super::{CodeRedemption, Committed, Grant, MetadataUpdates, Rotation, Session};
use super::{StoreError, StoredKey};

/// Read-only connections.
const READERS: u32 = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite store: a read pool, a channel to the writer task, and the in-process key lock.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    read: SqlitePool,
    writer: Writer,
    key_lock: Arc<Mutex<()>>,
}

/// Maps a sqlx-sqlite error (see [`StoreError::from_sqlx`]).
fn db(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e, transient)
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6) after busy_timeout, SQLITE_IOERR (10), SQLITE_CANTOPEN
/// (14); extended codes keep the primary code in their low byte.
fn transient(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 14))
}

impl SqliteStore {
    /// Opens `sqlite://…` (file created if missing; in-memory databases are refused because the
    /// writer and the readers are separate connections).
    pub(crate) async fn open_url(url: &str) -> Result<SqliteStore, StoreError> {
        let shown = super::redact_url(url);
        let options = SqliteConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            message: format!("{shown}: {e}"),
            source: Some(std::sync::Arc::new(e)),
        })?;
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::InvalidUrl {
                message: format!("{shown}: in-memory SQLite is not supported, name a file"),
                source: None,
            });
        }
        let path = options.get_filename().to_path_buf();
        crate::datadir::prepare_database(&path)?;
        Self::open_with(options).await
    }

    /// Opens the database file at `path`, creating it (`0600`, so SQLite's `-wal` and `-shm`
    /// files are `0600` too) if missing.
    pub(crate) async fn open_file(path: &Path) -> Result<SqliteStore, StoreError> {
        crate::datadir::prepare_database(path)?;
        Self::open_with(SqliteConnectOptions::new().filename(path)).await
    }

    async fn open_with(options: SqliteConnectOptions) -> Result<SqliteStore, StoreError> {
        let writer_options = options
            .clone()
            .create_if_missing(true)
            .read_only(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let mut writer = writer_options.connect().await.map_err(db)?;
        migrate(&mut writer).await?;

        let read_options = options
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(read_options)
            .await
            .map_err(db)?;

        Ok(SqliteStore {
            read,
            writer: Writer::spawn(writer, writer_options),
            key_lock: Arc::new(Mutex::new(())),
        })
    }

    pub(crate) async fn put_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let code_hash = code_hash.to_string();
        let grant = encode_grant(grant)?;
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO codes (code_hash, grant_json, expires_at) VALUES (?, ?, ?)",
                    )
                    .bind(code_hash)
                    .bind(grant)
                    .bind(expires_at)
                    .execute(&mut *c)
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    pub(crate) async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<CodeRedemption, StoreError> {
        let (result, committed) = self.redeem_code_early(code_hash, now).await;
        committed.wait().await?;
        result
    }

    pub(crate) async fn redeem_code_early(
        &self,
        code_hash: &str,
        now: i64,
    ) -> (Result<CodeRedemption, StoreError>, Committed) {
        let code_hash = code_hash.to_string();
        self.writer
            .write_early(false, move |c| {
                Box::pin(async move {
                    let redeemed = sqlx::query(
                        "UPDATE codes SET redeemed_at = ?1 \
                     WHERE code_hash = ?2 AND redeemed_at IS NULL AND expires_at > ?1 \
                     RETURNING grant_json",
                    )
                    .bind(now)
                    .bind(&code_hash)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)?;
                    if let Some(row) = redeemed {
                        let json: String = row.try_get(0).map_err(db)?;
                        return Ok(CodeRedemption::Redeemed(decode_grant(&json)?));
                    }
                    let row =
                        sqlx::query("SELECT redeemed_at, family FROM codes WHERE code_hash = ?")
                            .bind(&code_hash)
                            .fetch_optional(&mut *c)
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
                    sqlx::query("UPDATE codes SET replayed = 1 WHERE code_hash = ?")
                        .bind(&code_hash)
                        .execute(&mut *c)
                        .await
                        .map_err(db)?;
                    if let Some(family) = &family {
                        revoke(c, family).await?;
                    }
                    Ok(CodeRedemption::Replayed { family })
                })
            })
            .await
    }

    pub(crate) async fn link_code_family(
        &self,
        code_hash: &str,
        family: &str,
    ) -> Result<(), StoreError> {
        let code_hash = code_hash.to_string();
        let family = family.to_string();
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    let replayed: Option<i64> = sqlx::query_scalar(
                        "UPDATE codes SET family = ? WHERE code_hash = ? RETURNING replayed",
                    )
                    .bind(&family)
                    .bind(&code_hash)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)?;
                    if replayed.unwrap_or(0) != 0 {
                        revoke(c, &family).await?;
                    }
                    Ok(())
                })
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
        self.writer
            .write(true, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO refresh_families (family, grant_json) VALUES (?, ?) \
                     ON CONFLICT (family) DO UPDATE SET grant_json = excluded.grant_json",
                    )
                    .bind(&family)
                    .bind(grant)
                    .execute(&mut *c)
                    .await
                    .map_err(db)?;
                    sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, family, expires_at) VALUES (?, ?, ?)",
                )
                .bind(token_hash)
                .bind(&family)
                .bind(expires_at)
                .execute(&mut *c)
                .await
                .map_err(db)?;
                    Ok(())
                })
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
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    // The common case in one statement: mark a valid token used and read its family.
                    let rotated = sqlx::query(
                        "UPDATE refresh_tokens SET used_at = ?1 \
                     WHERE token_hash = ?2 AND used_at IS NULL \
                       AND (expires_at IS NULL OR expires_at > ?1) \
                       AND NOT EXISTS (SELECT 1 FROM refresh_families f \
                                       WHERE f.family = refresh_tokens.family AND f.revoked <> 0) \
                     RETURNING family, (SELECT grant_json FROM refresh_families f \
                                        WHERE f.family = refresh_tokens.family)",
                    )
                    .bind(now)
                    .bind(&old_hash)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)?;
                    if let Some(row) = rotated {
                        let family: String = row.try_get(0).map_err(db)?;
                        let json: String = row.try_get(1).map_err(db)?;
                        let done = match decode_grant(&json) {
                            Ok(grant) => sqlx::query(
                                "INSERT INTO refresh_tokens (token_hash, family, expires_at) \
                             VALUES (?, ?, ?)",
                            )
                            .bind(&new_hash)
                            .bind(&family)
                            .bind(new_expires_at)
                            .execute(&mut *c)
                            .await
                            .map_err(db)
                            .map(|_| grant),
                            Err(e) => Err(e),
                        };
                        return match done {
                            Ok(grant) => Ok(Rotation::Rotated { grant, family }),
                            Err(e) => {
                                // Undo the mark so the old token stays valid (cheaper than a
                                // savepoint around every rotation).
                                sqlx::query(
                                    "UPDATE refresh_tokens SET used_at = NULL WHERE token_hash = ?",
                                )
                                .bind(&old_hash)
                                .execute(&mut *c)
                                .await
                                .map_err(db)?;
                                Err(e)
                            }
                        };
                    }
                    let row = sqlx::query(
                        "SELECT t.family, t.used_at, t.expires_at, f.revoked \
                     FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family \
                     WHERE t.token_hash = ?",
                    )
                    .bind(&old_hash)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)?;
                    let Some(row) = row else {
                        return Ok(Rotation::Unknown);
                    };
                    let family: String = row.try_get(0).map_err(db)?;
                    let used_at: Option<i64> = row.try_get(1).map_err(db)?;
                    let revoked: i64 = row.try_get(3).map_err(db)?;
                    if revoked != 0 {
                        return Ok(Rotation::Revoked);
                    }
                    if used_at.is_some() {
                        revoke(c, &family).await?;
                        return Ok(Rotation::Reused { family });
                    }
                    Ok(Rotation::Expired)
                })
            })
            .await
    }

    pub(crate) async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        let family = family.to_string();
        self.writer
            .write(false, move |c| {
                Box::pin(async move { revoke(c, &family).await })
            })
            .await
    }

    pub(crate) async fn refresh_grant(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        let json: Option<String> = sqlx::query_scalar(
            "SELECT f.grant_json FROM refresh_tokens t \
             JOIN refresh_families f ON f.family = t.family \
             WHERE t.token_hash = ?1 AND t.used_at IS NULL AND f.revoked = 0 \
               AND (t.expires_at IS NULL OR t.expires_at > ?2)",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.read)
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
             WHERE user_id = ? AND client_id = ? AND audience = ?",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(audience)
        .fetch_optional(&self.read)
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
        let (user_id, client_id, audience) = (
            user_id.to_string(),
            client_id.to_string(),
            audience.to_string(),
        );
        let scopes = encode_scopes(scopes)?;
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO consents (user_id, client_id, audience, scopes_json) \
                     VALUES (?, ?, ?, ?) \
                     ON CONFLICT (user_id, client_id, audience) \
                     DO UPDATE SET scopes_json = excluded.scopes_json",
                    )
                    .bind(user_id)
                    .bind(client_id)
                    .bind(audience)
                    .bind(scopes)
                    .execute(&mut *c)
                    .await
                    .map_err(db)?;
                    Ok(())
                })
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
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO sessions (session_hash, user_id, auth_time, expires_at) \
                     VALUES (?, ?, ?, ?)",
                    )
                    .bind(session_hash)
                    .bind(user_id)
                    .bind(auth_time)
                    .bind(expires_at)
                    .execute(&mut *c)
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    pub(crate) async fn session(
        &self,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        let row: Option<SessionColumns> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE session_hash = ? AND expires_at > ?"
        ))
        .bind(session_hash)
        .bind(now)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        Ok(row.map(Session::from))
    }

    pub(crate) async fn delete_session(&self, session_hash: &str) -> Result<(), StoreError> {
        let session_hash = session_hash.to_string();
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM sessions WHERE session_hash = ?")
                        .bind(session_hash)
                        .execute(&mut *c)
                        .await
                        .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    pub(crate) async fn increment_logins(&self, user_id: &str) -> Result<i64, StoreError> {
        let user_id = user_id.to_string();
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    sqlx::query_scalar(
                        "INSERT INTO login_counts (user_id, count) VALUES (?, 1) \
                     ON CONFLICT (user_id) DO UPDATE SET count = count + 1 \
                     RETURNING count",
                    )
                    .bind(user_id)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(db)
                })
            })
            .await
    }

    pub(crate) async fn user_metadata(
        &self,
        user_id: &str,
    ) -> Result<Option<MetadataUpdates>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT app_metadata, user_metadata FROM user_metadata WHERE user_id = ?",
        )
        .bind(user_id)
        .fetch_optional(&self.read)
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
        let (user_id, updates) = (user_id.to_string(), updates.clone());
        // The single writer serializes read-modify-write, so concurrent logins of one user
        // merge instead of losing an update.
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    let row: Option<(String, String)> = sqlx::query_as(
                        "SELECT app_metadata, user_metadata FROM user_metadata WHERE user_id = ?",
                    )
                    .bind(&user_id)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db)?;
                    let (a, u) = super::codec::merged_metadata(row, &updates)?;
                    sqlx::query(
                        "INSERT INTO user_metadata (user_id, app_metadata, user_metadata) \
                     VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET \
                     app_metadata = excluded.app_metadata, user_metadata = excluded.user_metadata",
                    )
                    .bind(user_id)
                    .bind(a)
                    .bind(u)
                    .execute(&mut *c)
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
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
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(StoredKey::from).collect())
    }

    pub(crate) async fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let key = key.clone();
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO signing_keys \
                     (kid, alg, private_pkcs8_der, created_at, activates_at, retires_at) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&key.kid)
                    .bind(&key.alg)
                    .bind(&key.private_pkcs8_der)
                    .bind(key.created_at)
                    .bind(key.activates_at)
                    .bind(key.retires_at)
                    .execute(&mut *c)
                    .await
                    .map_err(|e| match db(e) {
                        StoreError::Conflict { source, .. } => {
                            StoreError::conflict(format!("signing key {:?}", key.kid), source)
                        }
                        other => other,
                    })?;
                    Ok(())
                })
            })
            .await
    }

    pub(crate) async fn retire_key(&self, kid: &str, retires_at: i64) -> Result<(), StoreError> {
        let kid = kid.to_string();
        self.writer
            .write(false, move |c| {
                Box::pin(async move {
                    let done = sqlx::query("UPDATE signing_keys SET retires_at = ? WHERE kid = ?")
                        .bind(retires_at)
                        .bind(&kid)
                        .execute(&mut *c)
                        .await
                        .map_err(db)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound(format!("signing key {kid:?}")));
                    }
                    Ok(())
                })
            })
            .await
    }

    pub(crate) async fn with_key_lock<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        // One SQLite file serves one instance: an in-process lock is enough. (A database-level
        // lock would hold the single write connection that `f` itself needs.)
        let _guard = self.key_lock.lock().await;
        f().await
    }

    pub(crate) async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.writer.write(false, move |c| {
            Box::pin(async move {
                let mut deleted = 0;
                for (sql, bind_now) in [
                    ("DELETE FROM sessions WHERE expires_at <= ?", true),
                    (
                        "DELETE FROM refresh_tokens \
                         WHERE expires_at IS NOT NULL AND expires_at <= ?",
                        true,
                    ),
                    (
                        "DELETE FROM refresh_tokens WHERE family IN \
                         (SELECT family FROM refresh_families WHERE revoked <> 0)",
                        false,
                    ),
                    (
                        "DELETE FROM refresh_families WHERE revoked <> 0 OR NOT EXISTS \
                         (SELECT 1 FROM refresh_tokens t \
                          WHERE t.family = refresh_families.family)",
                        false,
                    ),
                    // An expired code goes, unless it was redeemed into a refresh family that
                    // still lives: that row stays as a tombstone, so a replay of the code still
                    // revokes the family (RFC 6749 §4.1.2) for as long as it exists. Its grant
                    // (personal data) is not needed for that and is dropped.
                    (
                        "DELETE FROM codes WHERE expires_at <= ? AND (family IS NULL OR NOT EXISTS \
                         (SELECT 1 FROM refresh_families f \
                          WHERE f.family = codes.family AND f.revoked = 0))",
                        true,
                    ),
                ] {
                    let mut query = sqlx::query(sql);
                    if bind_now {
                        query = query.bind(now);
                    }
                    deleted += query.execute(&mut *c).await.map_err(db)?.rows_affected();
                }
                sqlx::query("UPDATE codes SET grant_json = '{}' WHERE expires_at <= ? AND grant_json <> '{}'")
                    .bind(now)
                    .execute(&mut *c)
                    .await
                    .map_err(db)?;
                Ok(deleted)
            })
        })
        .await
    }
}

/// Marks a family revoked (no-op when unknown).
async fn revoke(c: &mut SqliteConnection, family: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE refresh_families SET revoked = 1 WHERE family = ?")
        .bind(family)
        .execute(&mut *c)
        .await
        .map_err(db)?;
    Ok(())
}

/// Brings the schema up to date ([`super::migrate`]) in one `BEGIN IMMEDIATE` transaction.
async fn migrate(c: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *c)
        .await
        .map_err(db)?;
    let result = super::migrate::run::<sqlx::Sqlite>(c, &super::migrate::SQLITE, db).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = sqlx::query(end).execute(&mut *c).await.map_err(db);
    result.and(ended.map(|_| ()))
}

//! Persistence for the token server: authorization codes, refresh tokens (with their grant
//! family), consents, login sessions, login counters and signing keys.
//!
//! One [`Store`] API, two engines chosen by the URL scheme: SQLite (`sqlite://PATH`, the embedded
//! default) and PostgreSQL (`postgres://…`, for several instances sharing one database). Schema
//! migrations are embedded in the binary and run when the store opens; a database whose schema is
//! newer than this binary knows is refused.
//!
//! The store never sees raw secrets: codes, refresh tokens and session cookies are keyed by the
//! SHA-256 hex digest the caller computed. Times are unix seconds supplied by the caller (`now`),
//! so the clock can be pinned in tests; a row with `expires_at <= now` is expired.

// The engines are the `sqlite` and `postgres` features (Cargo.toml); the server needs one.
#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("the store needs the `sqlite` or the `postgres` feature");
mod codec;
mod error;
mod migrate;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod purge;
#[cfg(feature = "sqlite")]
mod sqlite;
// The statements both engines run; each engine keeps only what its dialect alone has.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod types;

use std::future::Future;
use std::path::Path;

pub use self::error::{redact_url, Cause, StoreError};
pub use self::types::StoredKey;
pub use self::types::{CodeRedemption, Committed, Grant, GrantWithMetadata, Rotation, Session};
pub use crate::rules::MetadataUpdates;

#[cfg(feature = "postgres")]
use self::postgres::PgStore;
#[cfg(feature = "sqlite")]
use self::sqlite::SqliteStore;

/// The persistence layer: cheap to clone, `Send + Sync`; every clone shares the same database.
/// The persistence layer: cheap to clone, `Send + Sync`; every clone shares the same database.
#[derive(Clone)]
pub struct Store {
    engine: Engine,
}

#[derive(Clone)]
enum Engine {
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(PgStore),
}

/// Calls the same method on whichever engine backs the store.
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match &$self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Sqlite($s) => $call,
            #[cfg(feature = "postgres")]
            Engine::Postgres($s) => $call,
        }
    };
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Engine::Postgres(_) => "postgres",
        };
        f.debug_struct("Store").field("engine", &engine).finish()
    }
}

impl Store {
    /// Opens (and migrates) the database named by `url`: `sqlite://path/claimrules.db` (the file
    /// and its folder are created if missing) or `postgres://…`. Refuses a schema newer than this
    /// binary knows with [`StoreError::SchemaTooNew`].
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            #[cfg(feature = "sqlite")]
            "sqlite" => Ok(Store {
                engine: Engine::Sqlite(SqliteStore::open_url(url).await?),
            }),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Store {
                engine: Engine::Postgres(PgStore::open(url).await?),
            }),
            _ => Err(StoreError::UnsupportedUrl(redact_url(url))),
        }
    }

    /// Opens the SQLite database `claimrules.db` in `data_dir`, creating the folder (`0700`) and
    /// the file (`0600`) if missing, and refusing either when it is accessible by group or
    /// others ([`crate::datadir`]).
    pub async fn open_in_folder(data_dir: &Path) -> Result<Store, StoreError> {
        crate::datadir::private_folder(data_dir)?;
        #[cfg(feature = "sqlite")]
        return Ok(Store {
            engine: Engine::Sqlite(SqliteStore::open_file(&data_dir.join("claimrules.db")).await?),
        });
        #[cfg(not(feature = "sqlite"))]
        Err(StoreError::UnsupportedUrl(
            "sqlite (built without the `sqlite` feature): set database_url".into(),
        ))
    }

    /// Stores an authorization code (by the SHA-256 hex of the code) with its grant.
    pub async fn put_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_code(code_hash, grant, expires_at).await)
    }

    /// Redeems a code, atomically single-use: of concurrent callers exactly one gets
    /// [`CodeRedemption::Redeemed`]; later calls get [`CodeRedemption::Replayed`], and the family
    /// linked to the code (if any) is revoked in the same transaction.
    pub async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<CodeRedemption, StoreError> {
        dispatch!(self, s => s.redeem_code(code_hash, now).await)
    }

    /// [`Store::redeem_code`] in two steps, so the caller can work while the redemption is made
    /// durable: the answer comes as soon as the code is marked inside the writer's open
    /// transaction, and the returned [`Committed`] resolves once that transaction is committed.
    /// Nothing derived from the answer may leave the process before [`Committed::wait`] returned
    /// `Ok`: if the batch is rolled back, the code was never redeemed. (PostgreSQL commits each
    /// redemption before answering; its `Committed` is already resolved.)
    pub async fn redeem_code_early(
        &self,
        code_hash: &str,
        now: i64,
    ) -> (Result<CodeRedemption, StoreError>, Committed) {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Sqlite(s) => s.redeem_code_early(code_hash, now).await,
            #[cfg(feature = "postgres")]
            Engine::Postgres(s) => (s.redeem_code(code_hash, now).await, Committed::done()),
        }
    }

    /// Links the refresh-token family issued from a redeemed code, so a replay of the code can
    /// revoke it. If the code was already replayed meanwhile, the family is revoked at once. An
    /// unknown (e.g. purged) code is ignored.
    pub async fn link_code_family(&self, code_hash: &str, family: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.link_code_family(code_hash, family).await)
    }

    /// Stores a refresh token in `family` (the grant id shared by a chain of rotations), creating
    /// the family with `grant` or updating its grant.
    pub async fn put_refresh(
        &self,
        token_hash: &str,
        family: &str,
        grant: &Grant,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_refresh(token_hash, family, grant, expires_at).await)
    }

    /// Rotates a refresh token in one transaction: the old token is marked used and the new one
    /// stored in the same family. Presenting an already-used token revokes the whole family
    /// ([`Rotation::Reused`]); of concurrent rotations of one token exactly one succeeds.
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
    ) -> Result<Rotation, StoreError> {
        dispatch!(self, s => s.rotate_refresh(old_hash, new_hash, now, new_expires_at) .await)
    }

    /// [`Store::rotate_refresh`] without reading the family's grant, for a caller that read it
    /// already ([`Store::refresh_grant`], as the token endpoint does before it runs the rules):
    /// the same transaction and outcomes, minus decoding the stored grant on the write path.
    pub async fn rotate_refresh_without_grant(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
    ) -> Result<Rotation<()>, StoreError> {
        dispatch!(self, s => s.rotate_refresh_without_grant(old_hash, new_hash, now, new_expires_at).await)
    }

    /// [`Store::rotate_refresh`] for the token endpoint, in two steps like
    /// [`Store::redeem_code_early`]: the answer comes as soon as the rotation ran inside the
    /// writer's open transaction, with the family's grant and the stored metadata of its user
    /// (`None` when no rule stored any), and the returned [`Committed`] resolves once it is
    /// durable. Nothing derived from the answer may leave the process before
    /// [`Committed::wait`] returned `Ok`. The token is rotated only when its grant was issued to
    /// `client_id`; presented by another client it stays as it was
    /// ([`Rotation::OtherClient`]). A caller that then refuses the request puts the tokens back
    /// with [`Store::undo_rotation`]. (PostgreSQL reads the grant, checks the client and rotates
    /// in one call, each committed before the answer; its `Committed` is already resolved.)
    pub async fn rotate_refresh_early(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
        client_id: &str,
    ) -> (Result<Rotation<GrantWithMetadata>, StoreError>, Committed) {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Sqlite(s) => {
                s.rotate_refresh_early(old_hash, new_hash, now, new_expires_at, client_id)
                    .await
            }
            #[cfg(feature = "postgres")]
            Engine::Postgres(s) => (
                s.rotate_refresh_checked(old_hash, new_hash, now, new_expires_at, client_id)
                    .await,
                Committed::done(),
            ),
        }
    }

    /// Undoes a rotation whose new token was never handed out (the request was refused after
    /// [`Store::rotate_refresh_early`]): the new token is deleted and the old one is unused
    /// again, so it still refreshes, unless its family was revoked meanwhile. Nothing happens
    /// when the new token does not exist (already undone, or its rotation was rolled back).
    pub async fn undo_rotation(&self, old_hash: &str, new_hash: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.undo_rotation(old_hash, new_hash).await)
    }

    /// Revokes every refresh token of a family (no-op for an unknown family).
    pub async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.revoke_family(family).await)
    }

    /// The grant of a valid (unexpired, unused, unrevoked) refresh token, read-only.
    pub async fn refresh_grant(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        dispatch!(self, s => s.refresh_grant(token_hash, now).await)
    }

    /// [`Store::refresh_grant`] and [`Store::user_metadata`] of the grant's user, read together
    /// (one statement, one snapshot): what the token endpoint reads before it runs the rules of a
    /// refresh.
    pub async fn refresh_grant_with_metadata(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<GrantWithMetadata>, StoreError> {
        dispatch!(self, s => s.refresh_grant_with_metadata(token_hash, now).await)
    }

    /// Whether the consent stored for (user, client, audience) covers every requested scope.
    pub async fn consent_covers(
        &self,
        user_id: &str,
        client_id: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.consent_covers(user_id, client_id, audience, scopes).await)
    }

    /// Stores the consented scopes for (user, client, audience), replacing the previous set.
    pub async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.save_consent(user_id, client_id, audience, scopes).await)
    }

    /// Stores a login session keyed by the SHA-256 hex of the cookie value.
    pub async fn create_session(
        &self,
        session_hash: &str,
        user_id: &str,
        auth_time: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.create_session(session_hash, user_id, auth_time, expires_at) .await)
    }

    /// The session, if it exists and has not expired at `now`.
    pub async fn session(
        &self,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        dispatch!(self, s => s.session(session_hash, now).await)
    }

    /// Ends a session (no-op when unknown).
    pub async fn delete_session(&self, session_hash: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_session(session_hash).await)
    }

    /// Counts one more login of `user_id` and returns the new count (a first login gives 1).
    pub async fn increment_logins(&self, user_id: &str) -> Result<i64, StoreError> {
        dispatch!(self, s => s.increment_logins(user_id).await)
    }

    /// The metadata rules stored for `user_id` (top-level keys to lay over the config's, a
    /// `null` removing one), or `None` when no rule stored any.
    pub async fn user_metadata(
        &self,
        user_id: &str,
    ) -> Result<Option<MetadataUpdates>, StoreError> {
        dispatch!(self, s => s.user_metadata(user_id).await)
    }

    /// Merges a login's metadata updates into what is stored for `user_id` (atomically per
    /// user, on every instance).
    pub async fn update_user_metadata(
        &self,
        user_id: &str,
        updates: &MetadataUpdates,
    ) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        dispatch!(self, s => s.update_user_metadata(user_id, updates).await)
    }

    /// Answers when the database does (readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Every stored signing key, oldest first.
    pub async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        dispatch!(self, s => s.keys().await)
    }

    /// Stores a new signing key ([`StoreError::Conflict`] if its `kid` exists).
    pub async fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_key(key).await)?;
        metrics::counter!("claimrules_key_rotations_total").increment(1);
        Ok(())
    }

    /// Sets a key's retirement time ([`StoreError::NotFound`] for an unknown `kid`).
    pub async fn retire_key(&self, kid: &str, retires_at: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.retire_key(kid, retires_at).await)
    }

    /// Runs `f` while holding the key lock, so that only one caller at a time (across instances
    /// on PostgreSQL, within the process on SQLite) generates the first key. `f` may use this
    /// store.
    pub async fn with_key_lock<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        dispatch!(self, s => s.with_key_lock(f).await)
    }

    /// Deletes expired codes, sessions and refresh tokens, revoked families and families left
    /// without tokens; returns the number of rows deleted.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.purge_expired(now).await)
    }
}

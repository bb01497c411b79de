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
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::future::Future;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::rules::MetadataUpdates;

#[cfg(feature = "postgres")]
use self::postgres::PgStore;
#[cfg(feature = "sqlite")]
use self::sqlite::SqliteStore;

/// Everything an authorization code or a refresh token stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// The client the grant was issued to.
    pub client_id: String,
    /// The user who logged in.
    pub user_id: String,
    /// The API identifier (`audience`) requested, if any.
    pub audience: Option<String>,
    /// Granted scopes (as requested and consented).
    pub scopes: Vec<String>,
    /// The `redirect_uri` sent to `/authorize`, compared byte for byte at the token endpoint.
    pub redirect_uri: String,
    /// The OIDC `nonce` sent to `/authorize`, if any.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge (codes only).
    pub code_challenge: Option<String>,
    /// Unix seconds of the login.
    pub auth_time: i64,
    /// The login session, if any.
    pub session_id: Option<String>,
    /// `context.request` of the login (query, ip, hostname, userAgent).
    pub request: serde_json::Value,
    /// The scope the rules rewrote at login, if any.
    pub rule_scope: Option<Vec<String>>,
    /// The rules' result at login (custom claims, final user, scope), signed at code exchange.
    #[serde(default)]
    pub claims: Option<serde_json::Value>,
}

/// A signing key as stored: the private key in PKCS#8 DER and its life cycle.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id, published as `kid` in the JWKS and in token headers.
    pub kid: String,
    /// JWS algorithm name (`RS256`, `ES256`, `EdDSA`).
    pub alg: String,
    /// The private key, PKCS#8 DER.
    pub private_pkcs8_der: Vec<u8>,
    /// Unix seconds when the key was created (and published).
    pub created_at: i64,
    /// Unix seconds from which the key may sign (publication precedes use).
    pub activates_at: i64,
    /// Unix seconds after which the key no longer verifies, if it is retired.
    pub retires_at: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_pkcs8_der", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .finish()
    }
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The logged-in user.
    pub user_id: String,
    /// Unix seconds of the login.
    pub auth_time: i64,
    /// Unix seconds when the session ends.
    pub expires_at: i64,
}

/// The result of presenting an authorization code.
// Returned once per request and matched at once: boxing the grant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum CodeRedemption {
    /// First use of a valid code: its grant.
    Redeemed(Grant),
    /// No such code.
    Unknown,
    /// The code expired before it was used.
    Expired,
    /// The code was already redeemed. `family` is the refresh-token family issued from it, if one
    /// was linked; the store has already revoked that family (RFC 6749 §4.1.2).
    Replayed {
        /// The grant family linked with [`Store::link_code_family`], if any.
        family: Option<String>,
    },
}

/// The result of presenting a refresh token for rotation.
// Returned once per request and matched at once: boxing the grant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// The old token is now used and the new one is valid in the same family.
    Rotated {
        /// The grant the family stands for.
        grant: Grant,
        /// The family (grant id).
        family: String,
    },
    /// No such token.
    Unknown,
    /// The token expired.
    Expired,
    /// The token had already been rotated: the whole family is now revoked (RFC 9700 §4.14.2).
    Reused {
        /// The family that was revoked.
        family: String,
    },
    /// The token's family was revoked earlier.
    Revoked,
}

/// Errors of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported engine.
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The URL is malformed or asks for something the store refuses.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The data folder could not be created.
    #[error("cannot create the data folder {path}: {message}")]
    Folder {
        /// The folder.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// The data folder or a database file is accessible by group or others (see
    /// [`crate::datadir`]); the message says what to run.
    #[error("{0}")]
    Exposed(String),
    /// The database cannot be reached (connection refused or lost, pool exhausted, busy).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database was written by a newer claimrules.
    #[error(
        "the database schema is version {found}, newer than this claimrules supports \
         (version {supported}); upgrade claimrules or use another database"
    )]
    SchemaTooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// An embedded migration failed.
    #[error("database migration to schema version {version} failed: {message}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// The database's message.
        message: String,
    },
    /// A row with the same key already exists.
    #[error("already stored: {0}")]
    Conflict(String),
    /// The row to change does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A stored value could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// Maps an error of preparing the data folder.
    pub(crate) fn from_datadir(e: crate::datadir::DataDirError) -> StoreError {
        match e {
            crate::datadir::DataDirError::Create { path, message } => StoreError::Folder {
                path: path.display().to_string(),
                message,
            },
            exposed => StoreError::Exposed(exposed.to_string()),
        }
    }

    /// Maps a sqlx error, telling connection trouble (`Unavailable`) and duplicates (`Conflict`)
    /// apart from other failures. `transient` tells whether the engine's error code means the
    /// database is (temporarily) out of reach.
    pub(crate) fn from_sqlx(e: sqlx::Error, transient: fn(&str) -> bool) -> StoreError {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    return StoreError::Conflict(db.message().to_string());
                }
                if db.code().is_some_and(|c| transient(&c)) {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Database(e.to_string())
                }
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// `url` without its password, for messages and logs. Works without parsing the URL, so a
/// malformed one (a bad port, an unencoded space or `/` in the password) is redacted too:
/// everything between the first `:` of the user info and the last `@` becomes `***`, and the
/// values of `password` and `sslpassword` query parameters (which sqlx also reads) as well.
/// When in doubt it hides more than the password, never less.
pub fn redact_url(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return redact_query(url);
    };
    let (scheme, rest) = url.split_at(i + 3);
    let mut out = scheme.to_owned();
    let rest = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(c) => {
                    out.push_str(&userinfo[..c]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };
    out.push_str(&redact_query(rest));
    out
}

/// `text` with the values of `password=` / `sslpassword=` query parameters replaced by `***`.
fn redact_query(text: &str) -> String {
    let Some(q) = text.find('?') else {
        return text.to_owned();
    };
    let (head, query) = text.split_at(q + 1);
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword") =>
            {
                format!("{k}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}{}", pairs.join("&"))
}

/// The persistence layer: cheap to clone, `Send + Sync`; every clone shares the same database.
/// The migrations still to run over a database at schema version `current` (`None` when new),
/// numbered from 1; a schema newer than the binary knows is refused. Shared by both engines.
pub(crate) fn pending_migrations<'a>(
    current: Option<i64>,
    migrations: &'a [&'a str],
) -> Result<Vec<(i64, &'a str)>, StoreError> {
    let current = current.unwrap_or(0);
    let supported = migrations.len() as i64;
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    Ok((1..)
        .zip(migrations.iter().copied())
        .skip(current as usize)
        .collect())
}

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

/// The commit of a write whose answer was given early ([`Store::redeem_code_early`]).
#[derive(Debug)]
#[must_use = "wait for the commit before anything derived from the write leaves the process"]
pub struct Committed(CommitState);

// Each engine uses part of it: with one engine, the other's part is unused.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
#[derive(Debug)]
enum CommitState {
    Done,
    Failed(StoreError),
    Pending(tokio::sync::oneshot::Receiver<Result<(), StoreError>>),
}

#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl Committed {
    pub(crate) fn done() -> Committed {
        Committed(CommitState::Done)
    }

    pub(crate) fn failed(e: StoreError) -> Committed {
        Committed(CommitState::Failed(e))
    }

    pub(crate) fn pending(rx: tokio::sync::oneshot::Receiver<Result<(), StoreError>>) -> Committed {
        Committed(CommitState::Pending(rx))
    }

    /// Waits until the write is durable; an error means it was rolled back (or its outcome is
    /// unknown because the writer stopped) and must be treated as never made.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            CommitState::Done => Ok(()),
            CommitState::Failed(e) => Err(e),
            CommitState::Pending(rx) => rx.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the SQLite writer stopped before committing".into(),
                ))
            }),
        }
    }
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

/// Reads stored metadata columns back.
pub(crate) fn decode_metadata(app: &str, user: &str) -> Result<MetadataUpdates, StoreError> {
    let parse = |text: &str| -> Result<Option<Map<String, Value>>, StoreError> {
        let map: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("user metadata: {e}")))?;
        Ok((!map.is_empty()).then_some(map))
    };
    Ok(MetadataUpdates {
        app_metadata: parse(app)?,
        user_metadata: parse(user)?,
    })
}

/// The stored columns after merging `updates` over the stored row (nulls kept: they remove the
/// config file's keys at the next login).
pub(crate) fn merged_metadata(
    row: Option<(String, String)>,
    updates: &MetadataUpdates,
) -> Result<(String, String), StoreError> {
    let mut stored = match row {
        Some((a, u)) => decode_metadata(&a, &u)?,
        None => MetadataUpdates::default(),
    };
    stored.merge(updates);
    let encode = |m: &Option<Map<String, Value>>| {
        serde_json::to_string(&m.clone().unwrap_or_default())
            .map_err(|e| StoreError::Corrupt(format!("user metadata: {e}")))
    };
    Ok((
        encode(&stored.app_metadata)?,
        encode(&stored.user_metadata)?,
    ))
}

/// Serializes a grant for storage.
pub(crate) fn encode_grant(grant: &Grant) -> Result<String, StoreError> {
    serde_json::to_string(grant).map_err(|e| StoreError::Corrupt(format!("grant: {e}")))
}

/// Reads a stored grant back.
pub(crate) fn decode_grant(json: &str) -> Result<Grant, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("grant: {e}")))
}

/// Stores a scope set in a canonical form (sorted, without duplicates).
pub(crate) fn encode_scopes(scopes: &[String]) -> Result<String, StoreError> {
    let mut set: Vec<&String> = scopes.iter().collect();
    set.sort();
    set.dedup();
    serde_json::to_string(&set).map_err(|e| StoreError::Corrupt(format!("scopes: {e}")))
}

/// Whether the stored scope set (JSON array) contains every requested scope.
pub(crate) fn scopes_cover(stored_json: &str, requested: &[String]) -> Result<bool, StoreError> {
    let stored: Vec<String> = serde_json::from_str(stored_json)
        .map_err(|e| StoreError::Corrupt(format!("consent scopes: {e}")))?;
    Ok(requested.iter().all(|s| stored.contains(s)))
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
        crate::datadir::private_folder(data_dir).map_err(StoreError::from_datadir)?;
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

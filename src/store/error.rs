//! [`StoreError`], how a driver's error is classified into it, and the redaction of database
//! URLs for messages.

use std::sync::Arc;

use crate::datadir::DataDirError;

/// The error behind a [`StoreError`] (a driver's or a codec's), shared so that one failure can
/// be handed to every caller of a failed batch.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the store. Messages never hold a password: URLs are shown through [`redact_url`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no supported engine.
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The URL is malformed or asks for something the store refuses.
    #[error("invalid database URL: {message}")]
    InvalidUrl {
        /// The redacted URL and what is wrong with it.
        message: String,
        /// The parser's error, if it refused the URL.
        #[source]
        source: Option<Cause>,
    },
    /// The data folder or the database file could not be created, or is accessible by group or
    /// others (see [`crate::datadir`]); the message says what to run.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The database cannot be reached (connection refused or lost, pool exhausted, busy).
    #[error("database unavailable: {message}")]
    Unavailable {
        /// What failed, with the driver's message.
        message: String,
        /// The driver's error, if one caused it.
        #[source]
        source: Option<Cause>,
    },
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
    #[error("database migration to schema version {version} failed: {source}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// The database's error.
        #[source]
        source: Cause,
    },
    /// A row with the same key already exists.
    #[error("already stored: {message}")]
    Conflict {
        /// What exists already (or the database's message).
        message: String,
        /// The database's unique violation, if it reported one.
        #[source]
        source: Option<Cause>,
    },
    /// The row to change does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A stored value could not be decoded (or a value could not be encoded for storage).
    #[error("stored data is corrupt: {message}")]
    Corrupt {
        /// Which value, with the decoder's message.
        message: String,
        /// The decoder's error.
        #[source]
        source: Option<Cause>,
    },
    /// Any other database error.
    #[error("database error: {source}")]
    Database {
        /// The database's error.
        #[source]
        source: Cause,
    },
}

impl StoreError {
    /// [`StoreError::Unavailable`] without an underlying error (e.g. a stopped writer).
    pub(crate) fn unavailable(message: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`StoreError::Conflict`] naming what exists, keeping the database's error if any.
    pub(crate) fn conflict(message: impl Into<String>, source: Option<Cause>) -> StoreError {
        StoreError::Conflict {
            message: message.into(),
            source,
        }
    }

    /// [`StoreError::Corrupt`]: `what` (a grant, scopes, metadata) did not decode or encode.
    pub(crate) fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
        StoreError::Corrupt {
            message: format!("{what}: {e}"),
            source: Some(Arc::new(e)),
        }
    }

    /// The error a driver reported, prefixed with `context` when it is [`StoreError::Unavailable`]
    /// (e.g. the redacted URL of a failed connection); other errors are returned as they are.
    #[cfg(feature = "postgres")]
    pub(crate) fn in_context(self, context: impl std::fmt::Display) -> StoreError {
        match self {
            StoreError::Unavailable { message, source } => StoreError::Unavailable {
                message: format!("{context}: {message}"),
                source,
            },
            other => other,
        }
    }

    /// Maps a sqlx error, telling connection trouble (`Unavailable`) and duplicates (`Conflict`)
    /// apart from other failures. `transient` tells whether the engine's error code means the
    /// database is (temporarily) out of reach. The sqlx error is kept as the source.
    #[cfg(feature = "postgres")]
    pub(crate) fn from_sqlx(e: sqlx::Error, transient: fn(&str) -> bool) -> StoreError {
        let unavailable = matches!(
            &e,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        );
        let (conflict, transient) = match &e {
            sqlx::Error::Database(db) => (
                db.is_unique_violation().then(|| db.message().to_string()),
                db.code().is_some_and(|c| transient(&c)),
            ),
            _ => (None, false),
        };
        let message = e.to_string();
        let source: Cause = Arc::new(e);
        match conflict {
            Some(conflict) => StoreError::conflict(conflict, Some(source)),
            None if unavailable || transient => StoreError::Unavailable {
                message,
                source: Some(source),
            },
            None => StoreError::Database { source },
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

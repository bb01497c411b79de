//! What the store keeps and answers: grants, signing keys, sessions, and the outcomes of
//! redeeming a code, rotating a refresh token and an early-answered commit.

use serde::{Deserialize, Serialize};

use super::{MetadataUpdates, StoreError};

/// A refresh family's grant with the metadata rules stored for its user (`None` when none): what
/// the token endpoint reads of a refresh ([`Store::refresh_grant_with_metadata`],
/// [`Store::rotate_refresh_early`]).
///
/// [`Store::refresh_grant_with_metadata`]: super::Store::refresh_grant_with_metadata
/// [`Store::rotate_refresh_early`]: super::Store::rotate_refresh_early
pub type GrantWithMetadata = (Grant, Option<MetadataUpdates>);

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
        /// The grant family linked with
        /// [`Store::link_code_family`](super::Store::link_code_family), if any.
        family: Option<String>,
    },
}

/// The result of presenting a refresh token for rotation. `G` is what is told of the family's
/// grant: the [`Grant`] itself ([`Store::rotate_refresh`](super::Store::rotate_refresh)), or
/// `()` when the caller read it before
/// ([`Store::rotate_refresh_without_grant`](super::Store::rotate_refresh_without_grant)), or the
/// grant with its user's stored metadata
/// ([`Store::rotate_refresh_early`](super::Store::rotate_refresh_early)).
// Returned once per request and matched at once: boxing the grant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation<G = Grant> {
    /// The old token is now used and the new one is valid in the same family.
    Rotated {
        /// The grant the family stands for.
        grant: G,
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
    /// The token is valid but was issued to another client than the one presenting it: nothing
    /// changed ([`Store::rotate_refresh_early`](super::Store::rotate_refresh_early) only).
    OtherClient,
}

impl<G> Rotation<G> {
    /// The same outcome telling `f`'s value of the grant instead.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn map_grant<H>(self, f: impl FnOnce(G) -> H) -> Rotation<H> {
        match self {
            Rotation::Rotated { grant, family } => Rotation::Rotated {
                grant: f(grant),
                family,
            },
            Rotation::Unknown => Rotation::Unknown,
            Rotation::Expired => Rotation::Expired,
            Rotation::Reused { family } => Rotation::Reused { family },
            Rotation::Revoked => Rotation::Revoked,
            Rotation::OtherClient => Rotation::OtherClient,
        }
    }
}

/// The commit of a write whose answer was given early
/// ([`Store::redeem_code_early`](super::Store::redeem_code_early)).
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
                Err(StoreError::unavailable(
                    "the SQLite writer stopped before committing",
                ))
            }),
        }
    }
}

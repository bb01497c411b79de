//! The tenant's signing keys in its store: the first key created at start, the periodic refresh
//! that picks up other instances' keys and roll-overs, and `claimrules keys rotate`. Which keys
//! publish and which one signs is decided by [`crate::issuer::rotation`].

use std::sync::Arc;

use crate::config::Config;
use crate::issuer::rotation::{self, KeyRecord};
use crate::issuer::{KeyError, KeyRing, SigningKey};
use crate::model::unix_now;
use crate::store::{Store, StoreError, StoredKey};

use super::AppState;

/// Errors of loading, refreshing or rotating the signing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// The store could not read or write the keys.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be generated, or a stored one is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Builds the ring of the stored keys at `now` ([`rotation::key_ring`]).
pub fn key_ring(stored: &[StoredKey], now: i64) -> Result<KeyRing, KeyError> {
    let records: Vec<KeyRecord<'_>> = stored
        .iter()
        .map(|k| KeyRecord {
            kid: &k.kid,
            alg: &k.alg,
            private_pkcs8_der: &k.private_pkcs8_der,
            created_at: k.created_at,
            activates_at: k.activates_at,
            retires_at: k.retires_at,
        })
        .collect();
    rotation::key_ring(&records, now)
}

/// The store's row for a key created at `now` that starts signing at `activates_at`.
fn stored(key: &SigningKey, config: &Config, now: i64, activates_at: i64) -> StoredKey {
    StoredKey {
        kid: key.kid().to_owned(),
        alg: config.signing_alg.as_str().to_owned(),
        private_pkcs8_der: key.pkcs8_der().to_vec(),
        created_at: now,
        activates_at,
        retires_at: None,
    }
}

/// Loads the published keys from the store, creating the first one (under the store's key
/// lock, so concurrent instances agree) when there is none.
pub async fn load_keys(store: &Store, config: &Config) -> Result<KeyRing, KeysError> {
    let mut keys = store.keys().await?;
    if keys.is_empty() {
        // Generated before taking the lock (RSA generation is slow); another instance may win
        // the race, in which case this key is simply not used.
        let key = SigningKey::generate(config.signing_alg)?;
        let now = unix_now();
        let candidate = stored(&key, config, now, now);
        let st = store.clone();
        keys = store
            .with_key_lock(|| async move {
                let existing = st.keys().await?;
                if !existing.is_empty() {
                    return Ok(existing);
                }
                st.put_key(&candidate).await?;
                Ok(vec![candidate])
            })
            .await?;
    }
    Ok(key_ring(&keys, unix_now())?)
}

/// Reloads the keys from the store into the issuer (roll-over, other instances' keys).
pub async fn refresh_keys(state: &AppState) -> Result<(), KeysError> {
    let keys = state.store.keys().await?;
    state.issuer.set_keys(key_ring(&keys, unix_now())?);
    Ok(())
}

/// Refreshes the keys every `key_refresh_interval` seconds of the configuration; a failed
/// refresh keeps the current keys.
pub(crate) fn spawn_refresh(state: Arc<AppState>) {
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(state.config.key_refresh_interval.max(1));
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = refresh_keys(&state).await {
                tracing::warn!(error = %e, "key refresh failed; keeping the current keys");
            }
        }
    });
}

/// Rolls in a new signing key: published at once, used for signing after `delay` seconds (so
/// JWKS caches pick it up first, [`rotation::activation_time`]); the keys it replaces stay
/// published until every token they signed has expired. Returns the new key's `kid`.
pub async fn rotate_keys(store: &Store, config: &Config, delay: i64) -> Result<String, KeysError> {
    let key = SigningKey::generate(config.signing_alg)?;
    let now = unix_now();
    let existing = store.keys().await?;
    let activates_at = activation_time(now, delay, &existing);
    let longest = config
        .apis
        .iter()
        .map(|a| a.token_lifetime)
        .chain(config.clients.iter().map(|c| c.id_token_lifetime))
        .chain(std::iter::once(86_400))
        .max()
        .unwrap_or(86_400) as i64;
    for old in existing {
        if old.retires_at.is_none() {
            store.retire_key(&old.kid, activates_at + longest).await?;
        }
    }
    store
        .put_key(&stored(&key, config, now, activates_at))
        .await?;
    Ok(key.kid().to_owned())
}

fn activation_time(now: i64, delay: i64, existing: &[StoredKey]) -> i64 {
    rotation::activation_time(now, delay, existing.iter().map(|k| k.activates_at))
}

//! Key roll-over, without storage: which of the stored keys are published and which one signs
//! ([`key_ring`]), and when a key rolled in now starts signing ([`activation_time`]).
//!
//! The store keeps the keys (`claimrules::store::StoredKey`); this module sees only their plain
//! parts ([`KeyRecord`]), so the issuer does not depend on the store.
//!
//! ```
//! use claimrules::issuer::rotation::{activation_time, key_ring, KeyRecord};
//! use claimrules::{SigningAlg, SigningKey};
//!
//! let old = SigningKey::generate(SigningAlg::ES256).unwrap();
//! let new = SigningKey::generate(SigningAlg::ES256).unwrap();
//! // The new key rolls in at t = 1000 with a 300 s delay: published now, signing from 1300.
//! let at = activation_time(1000, 300, [0]);
//! let records = [
//!     KeyRecord { kid: old.kid(), alg: "ES256", private_pkcs8_der: old.pkcs8_der(), created_at: 0, activates_at: 0, retires_at: None },
//!     KeyRecord { kid: new.kid(), alg: "ES256", private_pkcs8_der: new.pkcs8_der(), created_at: 1000, activates_at: at, retires_at: None },
//! ];
//! let ring = key_ring(&records, 1000).unwrap();
//! assert_eq!(ring.published().len(), 2);
//! assert_eq!(ring.signing().unwrap().kid(), old.kid());
//! let later = key_ring(&records, 1300).unwrap();
//! assert_eq!(later.signing().unwrap().kid(), new.kid());
//! ```

use std::sync::Arc;

use super::keys::{KeyError, KeyRing, SigningAlg, SigningKey};

/// One stored key as the ring needs it.
#[derive(Debug, Clone, Copy)]
pub struct KeyRecord<'a> {
    /// Its `kid` (named in errors; the ring derives each key's `kid` from the key itself).
    pub kid: &'a str,
    /// The JOSE `alg` name it was stored with.
    pub alg: &'a str,
    /// The private key, PKCS#8 DER.
    pub private_pkcs8_der: &'a [u8],
    /// When it was created (unix seconds).
    pub created_at: i64,
    /// When it starts signing (unix seconds); it is published before.
    pub activates_at: i64,
    /// When it stops being published (unix seconds); `None` while no newer key replaced it.
    pub retires_at: Option<i64>,
}

/// Builds the ring of `records` at `now`: publishes every key not yet retired; signs with the
/// newest one already active (by activation, then creation time). No active key gives a ring
/// that publishes but cannot sign ([`KeyRing::signing`] says so).
pub fn key_ring(records: &[KeyRecord<'_>], now: i64) -> Result<KeyRing, KeyError> {
    let mut live: Vec<&KeyRecord<'_>> = records
        .iter()
        .filter(|k| k.retires_at.is_none_or(|r| r > now))
        .collect();
    live.sort_by_key(|k| (k.activates_at, k.created_at));
    let mut published = Vec::with_capacity(live.len());
    let mut signing = None;
    for (i, k) in live.iter().enumerate() {
        let alg: SigningAlg = k.alg.parse().map_err(|message| KeyError::Parse {
            kid: k.kid.to_owned(),
            alg: k.alg.to_owned(),
            message,
            source: None,
        })?;
        let parsed = SigningKey::from_pkcs8(alg, k.private_pkcs8_der)?;
        if k.activates_at <= now {
            signing = Some(i);
        }
        published.push(Arc::new(parsed));
    }
    Ok(KeyRing::new(published, signing))
}

/// When a key rolled in at `now` starts signing: after `delay` seconds (so JWKS caches pick it
/// up first; a negative delay counts as 0), and strictly after every `existing` key's
/// activation, so "the newest active key signs" is never a tie.
pub fn activation_time(now: i64, delay: i64, existing: impl IntoIterator<Item = i64>) -> i64 {
    let latest = existing.into_iter().max().unwrap_or(i64::MIN);
    (now + delay.max(0)).max(latest.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_is_strictly_after_every_existing_key() {
        assert_eq!(activation_time(100, 30, []), 130);
        assert_eq!(activation_time(100, -5, []), 100);
        assert_eq!(activation_time(100, 0, [100, 90]), 101);
        assert_eq!(activation_time(100, 0, [500]), 501);
    }

    #[test]
    fn retired_keys_are_not_published_and_unknown_algorithms_refused() {
        let k = SigningKey::generate(SigningAlg::EdDSA).unwrap();
        let record = |retires_at, alg| KeyRecord {
            kid: k.kid(),
            alg,
            private_pkcs8_der: k.pkcs8_der(),
            created_at: 0,
            activates_at: 0,
            retires_at,
        };
        let ring = key_ring(&[record(Some(10), "EdDSA")], 10).unwrap();
        assert!(ring.published().is_empty() && ring.signing().is_err());
        let ring = key_ring(&[record(Some(11), "EdDSA")], 10).unwrap();
        assert_eq!(ring.signing().unwrap().kid(), k.kid());
        assert!(key_ring(&[record(None, "HS256")], 10).is_err());
    }
}

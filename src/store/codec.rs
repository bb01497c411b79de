//! How stored values are written and read back, from the plain text and integers every engine's
//! rows give: grants and scope sets as JSON, user metadata as two JSON objects, signing keys and
//! sessions as columns in a fixed order.

use serde_json::{Map, Value};

use super::{Grant, GrantWithMetadata, MetadataUpdates, Session, StoreError, StoredKey};

/// The columns of `signing_keys` that make a [`StoredKey`], in the order of [`KeyColumns`]
/// (a macro, so queries can `concat!` it into static text).
macro_rules! key_columns {
    () => {
        "kid, alg, private_pkcs8_der, created_at, activates_at, retires_at"
    };
}
pub(crate) use key_columns;

/// A row of [`key_columns!`].
pub(crate) type KeyColumns = (String, String, Vec<u8>, i64, i64, Option<i64>);

impl From<KeyColumns> for StoredKey {
    fn from(
        (kid, alg, private_pkcs8_der, created_at, activates_at, retires_at): KeyColumns,
    ) -> StoredKey {
        StoredKey {
            kid,
            alg,
            private_pkcs8_der,
            created_at,
            activates_at,
            retires_at,
        }
    }
}

/// The columns of `sessions` that make a [`Session`], in the order of [`SessionColumns`].
macro_rules! session_columns {
    () => {
        "user_id, auth_time, expires_at"
    };
}
pub(crate) use session_columns;

/// A row of [`session_columns!`].
pub(crate) type SessionColumns = (String, i64, i64);

impl From<SessionColumns> for Session {
    fn from((user_id, auth_time, expires_at): SessionColumns) -> Session {
        Session {
            user_id,
            auth_time,
            expires_at,
        }
    }
}

/// Reads stored metadata columns back.
pub(crate) fn decode_metadata(app: &str, user: &str) -> Result<MetadataUpdates, StoreError> {
    let parse = |text: &str| -> Result<Option<Map<String, Value>>, StoreError> {
        let map: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| StoreError::corrupt("user metadata", e))?;
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
            .map_err(|e| StoreError::corrupt("user metadata", e))
    };
    Ok((
        encode(&stored.app_metadata)?,
        encode(&stored.user_metadata)?,
    ))
}

/// Serializes a grant for storage.
pub(crate) fn encode_grant(grant: &Grant) -> Result<String, StoreError> {
    serde_json::to_string(grant).map_err(|e| StoreError::corrupt("grant", e))
}

/// Reads a stored grant back.
pub(crate) fn decode_grant(json: &str) -> Result<Grant, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt("grant", e))
}

/// A grant and its user's stored metadata columns (`NULL`s when no rule stored any), as the
/// combined refresh read returns them.
pub(crate) fn decode_grant_with_metadata(
    grant: &str,
    app: Option<&str>,
    user: Option<&str>,
) -> Result<GrantWithMetadata, StoreError> {
    let metadata = match (app, user) {
        (Some(a), Some(u)) => Some(decode_metadata(a, u)?),
        _ => None,
    };
    Ok((decode_grant(grant)?, metadata))
}

/// Stores a scope set in a canonical form (sorted, without duplicates).
pub(crate) fn encode_scopes(scopes: &[String]) -> Result<String, StoreError> {
    let mut set: Vec<&String> = scopes.iter().collect();
    set.sort();
    set.dedup();
    serde_json::to_string(&set).map_err(|e| StoreError::corrupt("scopes", e))
}

/// Whether the stored scope set (JSON array) contains every requested scope.
pub(crate) fn scopes_cover(stored_json: &str, requested: &[String]) -> Result<bool, StoreError> {
    let stored: Vec<String> =
        serde_json::from_str(stored_json).map_err(|e| StoreError::corrupt("consent scopes", e))?;
    Ok(requested.iter().all(|s| stored.contains(s)))
}

//! Metadata updates of a run (`update_app_metadata` / `update_user_metadata`): merged the way
//! Auth0's Management API merges them, and into the scope's `user` so later rules see them.

use rhai::{Dynamic, Scope};
use serde::Serialize;
use serde_json::{Map, Value};

/// Metadata the rules asked to persist (`update_app_metadata` / `update_user_metadata`): the
/// top-level keys to merge over the user's stored metadata, a `null` value removing the key.
/// Each field is `None` when no rule updated that metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MetadataUpdates {
    /// Update of `user.app_metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_metadata: Option<Map<String, Value>>,
    /// Update of `user.user_metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Map<String, Value>>,
}

impl MetadataUpdates {
    /// Whether no rule updated any metadata.
    pub fn is_empty(&self) -> bool {
        self.app_metadata.is_none() && self.user_metadata.is_none()
    }

    /// Merges these updates over the `app_metadata` / `user_metadata` of a user object.
    pub fn apply_to(&self, user: &mut Value) {
        let Some(user) = user.as_object_mut() else {
            return;
        };
        for (field, update) in [
            ("app_metadata", &self.app_metadata),
            ("user_metadata", &self.user_metadata),
        ] {
            if let Some(update) = update {
                let slot = user
                    .entry(field)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(m) = slot {
                    merge_metadata(m, update, false);
                }
            }
        }
    }

    /// Merges `later` over these updates (`later` wins key by key).
    pub fn merge(&mut self, later: &MetadataUpdates) {
        for (mine, theirs) in [
            (&mut self.app_metadata, &later.app_metadata),
            (&mut self.user_metadata, &later.user_metadata),
        ] {
            if let Some(theirs) = theirs {
                merge_metadata(mine.get_or_insert_with(Map::new), theirs, true);
            }
        }
    }

    pub(crate) fn get(&self, which: usize) -> Option<&Map<String, Value>> {
        [&self.app_metadata, &self.user_metadata][which].as_ref()
    }

    pub(crate) fn set(&mut self, which: usize, map: Map<String, Value>) {
        *[&mut self.app_metadata, &mut self.user_metadata][which] = Some(map);
    }
}

/// Top-level merge of a metadata update, as Auth0's Management API merges `app_metadata`:
/// each key of `update` replaces the one in `base`; a `null` removes it, unless `keep_nulls`
/// (merging updates into updates, where the `null` must survive to remove the stored key).
pub fn merge_metadata(
    base: &mut Map<String, Value>,
    update: &Map<String, Value>,
    keep_nulls: bool,
) {
    for (k, v) in update {
        if v.is_null() && !keep_nulls {
            base.remove(k);
        } else {
            base.insert(k.clone(), v.clone());
        }
    }
}

/// Merges a rule's metadata updates into the scope's `user`, so later rules see them.
pub(crate) fn merge_into_scope_user(scope: &mut Scope, updates: &MetadataUpdates) {
    let Some(mut user) = scope
        .get_mut("user")
        .and_then(|d| d.write_lock::<rhai::Map>())
    else {
        return;
    };
    for (field, update) in [
        ("app_metadata", &updates.app_metadata),
        ("user_metadata", &updates.user_metadata),
    ] {
        let Some(update) = update else { continue };
        let slot = user
            .entry(field.into())
            .or_insert_with(|| Dynamic::from_map(Default::default()));
        if !slot.is_map() {
            *slot = Dynamic::from_map(Default::default());
        }
        if let Some(mut map) = slot.write_lock::<rhai::Map>() {
            for (k, v) in update {
                if v.is_null() {
                    map.remove(k.as_str());
                } else if let Ok(d) = rhai::serde::to_dynamic(v) {
                    map.insert(k.as_str().into(), d);
                }
            }
        }
    }
}

//! The `[[user]]` entries of `claimrules.toml`: the user directory.

use serde::Deserialize;
use serde_json::{Map, Value};

/// `[[user]]`: the Auth0 user shape plus a password hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// `user_id` (the `sub`).
    pub user_id: String,
    /// Email (login name).
    pub email: String,
    /// Another login name, e.g. "alice".
    #[serde(default)]
    pub username: Option<String>,
    /// Whether the email is verified.
    #[serde(default)]
    pub email_verified: bool,
    /// Full name.
    #[serde(default)]
    pub name: Option<String>,
    /// Nickname.
    #[serde(default)]
    pub nickname: Option<String>,
    /// Given name.
    #[serde(default)]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(default)]
    pub family_name: Option<String>,
    /// Picture URL.
    #[serde(default)]
    pub picture: Option<String>,
    /// Argon2 PHC hash (`claimrules hash-password`).
    pub password_hash: String,
    /// `app_metadata`.
    #[serde(default)]
    pub app_metadata: Map<String, Value>,
    /// `user_metadata`.
    #[serde(default)]
    pub user_metadata: Map<String, Value>,
}

impl UserConfig {
    /// The Auth0-shaped `user` object rules see (no password hash).
    pub fn to_rule_user(&self, logins_count: i64) -> Value {
        let mut u = Map::new();
        u.insert("user_id".into(), Value::String(self.user_id.clone()));
        u.insert("email".into(), Value::String(self.email.clone()));
        u.insert("email_verified".into(), Value::Bool(self.email_verified));
        for (k, v) in [
            ("name", &self.name),
            ("nickname", &self.nickname),
            ("given_name", &self.given_name),
            ("family_name", &self.family_name),
            ("picture", &self.picture),
            ("username", &self.username),
        ] {
            if let Some(v) = v {
                u.insert(k.into(), Value::String(v.clone()));
            }
        }
        u.insert("logins_count".into(), Value::from(logins_count));
        u.insert(
            "app_metadata".into(),
            Value::Object(self.app_metadata.clone()),
        );
        u.insert(
            "user_metadata".into(),
            Value::Object(self.user_metadata.clone()),
        );
        u.insert(
            "identities".into(),
            serde_json::json!([{
                "provider": "auth0",
                "connection": "Username-Password-Authentication",
                "user_id": self.user_id.split('|').next_back().unwrap_or(&self.user_id),
                "isSocial": false
            }]),
        );
        Value::Object(u)
    }
}

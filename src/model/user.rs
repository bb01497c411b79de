//! [`User`]: the Auth0-shaped `user` object rules run with.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{object_or_empty, ModelError};

/// An Auth0-shaped user (README "Variables in scope"): `user_id`, profile fields, `app_metadata`,
/// `user_metadata`, `identities`, plus any other field.
///
/// [`User::new`] starts with `email_verified: false` and empty `app_metadata`,
/// `user_metadata` and `identities`, so rules such as `!user.email_verified` or
/// `user.app_metadata.roles` work on a bare user. It (de)serializes as the plain JSON object;
/// deserializing requires a string `user_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "Map<String, Value>",
    into = "Map<String, Value>",
    expecting = "an Auth0-shaped user object with a string user_id"
)]
pub struct User {
    fields: Map<String, Value>,
}

impl User {
    /// A user with this `user_id` (the tokens' `sub`).
    pub fn new(user_id: impl Into<String>) -> User {
        let mut fields = Map::new();
        fields.insert("user_id".into(), Value::String(user_id.into()));
        fields.insert("email_verified".into(), Value::Bool(false));
        fields.insert("app_metadata".into(), json!({}));
        fields.insert("user_metadata".into(), json!({}));
        fields.insert("identities".into(), json!([]));
        User { fields }
    }

    /// The `user_id`.
    pub fn user_id(&self) -> &str {
        self.fields
            .get("user_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// A field, typed or not.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// The JSON object rules see.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The JSON object rules see, as a `Value`.
    pub fn into_value(self) -> Value {
        Value::Object(self.fields)
    }

    /// Sets any field (`groups`, `permissions`, `multifactor`, …); `null` removes it.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<Value>) -> User {
        let key: String = key.into();
        match value.into() {
            Value::Null => {
                self.fields.remove(&key);
            }
            v => {
                self.fields.insert(key, v);
            }
        }
        self
    }

    /// `email`.
    pub fn email(self, email: impl Into<String>) -> User {
        self.set("email", email.into())
    }

    /// `email_verified`.
    pub fn email_verified(self, verified: bool) -> User {
        self.set("email_verified", verified)
    }

    /// `name` (the ID token's `name` when `profile` is granted).
    pub fn name(self, name: impl Into<String>) -> User {
        self.set("name", name.into())
    }

    /// `nickname`.
    pub fn nickname(self, nickname: impl Into<String>) -> User {
        self.set("nickname", nickname.into())
    }

    /// `given_name`.
    pub fn given_name(self, given_name: impl Into<String>) -> User {
        self.set("given_name", given_name.into())
    }

    /// `family_name`.
    pub fn family_name(self, family_name: impl Into<String>) -> User {
        self.set("family_name", family_name.into())
    }

    /// `picture` (a URL).
    pub fn picture(self, picture: impl Into<String>) -> User {
        self.set("picture", picture.into())
    }

    /// `created_at` (Auth0 uses an ISO 8601 string).
    pub fn created_at(self, created_at: impl Into<String>) -> User {
        self.set("created_at", created_at.into())
    }

    /// `updated_at` (Auth0 uses an ISO 8601 string).
    pub fn updated_at(self, updated_at: impl Into<String>) -> User {
        self.set("updated_at", updated_at.into())
    }

    /// `logins_count`, counting the current login.
    pub fn logins_count(self, count: i64) -> User {
        self.set("logins_count", count)
    }

    /// `app_metadata`: a JSON object the user cannot edit (roles, plan, …).
    pub fn app_metadata(self, metadata: impl Into<Value>) -> User {
        self.set("app_metadata", object_or_empty(metadata.into()))
    }

    /// `user_metadata`: a JSON object of the user's own preferences.
    pub fn user_metadata(self, metadata: impl Into<Value>) -> User {
        self.set("user_metadata", object_or_empty(metadata.into()))
    }

    /// `identities`: an array of `{provider, connection, user_id, isSocial}` objects.
    pub fn identities(self, identities: impl Into<Value>) -> User {
        self.set("identities", identities.into())
    }
}

json_object_conversions!(User, "user", "user_id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_user_has_the_fields_rules_rely_on() {
        let u = Value::from(User::new("auth0|1"));
        assert_eq!(
            u,
            json!({"user_id": "auth0|1", "email_verified": false, "app_metadata": {},
                   "user_metadata": {}, "identities": []})
        );
    }

    #[test]
    fn null_removes_a_user_field_and_null_metadata_is_empty() {
        let u = User::new("a").email("a@x").set("email", Value::Null);
        assert!(u.get("email").is_none());
        let u = User::new("a").app_metadata(Value::Null);
        assert_eq!(u.get("app_metadata"), Some(&json!({})));
    }

    #[test]
    fn user_round_trips_through_serde_and_needs_a_user_id() {
        let u = User::new("auth0|9").set("tenant", "acme");
        let text = serde_json::to_string(&u).unwrap();
        let back: User = serde_json::from_str(&text).unwrap();
        assert_eq!(back, u);
        assert_eq!(back.user_id(), "auth0|9");
        let err = serde_json::from_str::<User>(r#"{"email":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("user_id"), "{err}");
        assert_eq!(
            User::try_from(json!([1])).unwrap_err(),
            ModelError::NotAnObject("user")
        );
    }
}

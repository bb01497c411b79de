//! Typed builders for the Auth0-shaped `user` and `context` objects rules run with.
//!
//! Both are open JSON objects underneath (README "Variables in scope"): the typed setters cover the documented
//! fields, [`User::set`] / [`Context::set`] add anything else (`user.groups`,
//! `context.request.geoip`, …), and every field passes through to the rules unchanged. Convert
//! with `.into()` wherever a `serde_json::Value` is expected ([`crate::RuleSet::run`],
//! [`crate::TokenRequest::new`]).
//!
//! ```
//! use claimrules::{Context, User};
//! use serde_json::json;
//!
//! let user = User::new("auth0|42")
//!     .email("ada@example.com")
//!     .email_verified(true)
//!     .app_metadata(json!({"roles": ["admin"]}))
//!     .set("groups", json!(["eng"]));
//! let context = Context::login("my-app")
//!     .audience("https://api.example.com")
//!     .query(json!({"scope": "openid read:contacts"}))
//!     .ip("203.0.113.7");
//!
//! let user = serde_json::Value::from(user);
//! assert_eq!(user["app_metadata"]["roles"], json!(["admin"]));
//! assert_eq!(user["groups"], json!(["eng"]));
//! let context = serde_json::Value::from(context);
//! assert_eq!(context["clientID"], "my-app");
//! assert_eq!(context["protocol"], "oidc-basic-profile");
//! assert_eq!(context["request"]["ip"], "203.0.113.7");
//! assert_eq!(context["accessToken"], json!({}));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::issuer::{unix_now, Protocol};

/// The conversions shared by [`User`] and [`Context`]: from a JSON object that has the string
/// field `$field` (or a `Value` holding one), and back to a map or a value.
macro_rules! json_object_conversions {
    ($ty:ident, $object:literal, $field:literal) => {
        impl TryFrom<Map<String, Value>> for $ty {
            type Error = ModelError;
            fn try_from(fields: Map<String, Value>) -> Result<$ty, ModelError> {
                if !fields.get($field).is_some_and(Value::is_string) {
                    return Err(ModelError::MissingField {
                        object: $object,
                        field: $field,
                    });
                }
                Ok($ty { fields })
            }
        }

        impl TryFrom<Value> for $ty {
            type Error = ModelError;
            fn try_from(value: Value) -> Result<$ty, ModelError> {
                match value {
                    Value::Object(m) => $ty::try_from(m),
                    _ => Err(ModelError::NotAnObject($object)),
                }
            }
        }

        impl From<$ty> for Map<String, Value> {
            fn from(v: $ty) -> Map<String, Value> {
                v.fields
            }
        }

        impl From<$ty> for Value {
            fn from(v: $ty) -> Value {
                v.into_value()
            }
        }
    };
}

/// Why a JSON value is not a usable user or context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The value is not a JSON object.
    #[error("the {0} must be a JSON object")]
    NotAnObject(&'static str),
    /// A required string field is missing or not a string.
    #[error("the {object} needs a string {field:?}")]
    MissingField {
        /// `user` or `context`.
        object: &'static str,
        /// The field.
        field: &'static str,
    },
}

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

/// `null` metadata becomes `{}`: rules read `user.app_metadata.x` and must not fail on it.
fn object_or_empty(v: Value) -> Value {
    if v.is_null() {
        json!({})
    } else {
        v
    }
}

json_object_conversions!(User, "user", "user_id");

/// An Auth0-shaped rule `context` (README "Variables in scope"), built the way the token server builds it.
///
/// [`Context::login`] fills every documented field: `clientName` = the client id, empty
/// `clientMetadata`, the `Username-Password-Authentication` connection, `request` with empty
/// `query` and `body`, `stats.loginsCount` 1, `tenant` "", one `pwd` authentication method now,
/// empty `authorization.roles`, and empty `accessToken` / `idToken` for the rules to fill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "Map<String, Value>",
    into = "Map<String, Value>",
    expecting = "an Auth0-shaped context object with a string clientID"
)]
pub struct Context {
    fields: Map<String, Value>,
}

/// The `clientID` of the default context ([`Context::default`]).
pub const DEFAULT_CLIENT_ID: &str = "test-client";
/// The `clientName` of the default context ([`Context::default`]).
pub const DEFAULT_CLIENT_NAME: &str = "Test client";

/// The default context of `claimrules run`, `claimrules test` and the playground:
/// [`Context::login`] for the client [`DEFAULT_CLIENT_ID`] named [`DEFAULT_CLIENT_NAME`], the
/// same fields the token server fills for a login (README "The default context").
impl Default for Context {
    fn default() -> Context {
        Context::login(DEFAULT_CLIENT_ID).client_name(DEFAULT_CLIENT_NAME)
    }
}

impl Context {
    /// A context for an interactive login (`protocol` `oidc-basic-profile`).
    pub fn login(client_id: impl Into<String>) -> Context {
        Context::new(client_id, Protocol::AuthorizationCode)
    }

    /// A context for a refresh (`protocol` `oauth2-refresh-token`).
    pub fn refresh(client_id: impl Into<String>) -> Context {
        Context::new(client_id, Protocol::RefreshToken)
    }

    /// A context for `client_id` and `protocol` (a [`Protocol`] or its name).
    pub fn new(client_id: impl Into<String>, protocol: impl Into<Protocol>) -> Context {
        let client_id = client_id.into();
        let protocol = protocol.into();
        let mut fields = Map::new();
        for (key, value) in [
            ("clientID", Value::String(client_id.clone())),
            ("clientName", Value::String(client_id)),
            ("clientMetadata", json!({})),
            ("connection", json!("Username-Password-Authentication")),
            ("connectionStrategy", json!("auth0")),
            ("protocol", json!(protocol.as_str())),
            ("request", json!({ "query": {}, "body": {} })),
            ("stats", json!({ "loginsCount": 1 })),
            ("sessionID", Value::Null),
            ("tenant", json!("")),
            ("audience", Value::Null),
            (
                "authentication",
                json!({ "methods": [ { "name": "pwd", "timestamp": unix_now() * 1000 } ] }),
            ),
            ("authorization", json!({ "roles": [] })),
            ("accessToken", json!({})),
            ("idToken", json!({})),
        ] {
            fields.insert(key.into(), value);
        }
        Context { fields }
    }

    /// The `clientID`.
    pub fn client_id(&self) -> &str {
        self.fields
            .get("clientID")
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

    /// Sets any top-level field; `null` is kept (rules read it as `()`).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<Value>) -> Context {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// `clientName`.
    pub fn client_name(self, name: impl Into<String>) -> Context {
        self.set("clientName", name.into())
    }

    /// `clientMetadata` (a JSON object).
    pub fn client_metadata(self, metadata: impl Into<Value>) -> Context {
        self.set("clientMetadata", object_or_empty(metadata.into()))
    }

    /// `connection` (e.g. `google-oauth2`).
    pub fn connection(self, connection: impl Into<String>) -> Context {
        self.set("connection", connection.into())
    }

    /// `connectionStrategy` (e.g. `auth0`, `google-oauth2`, `samlp`).
    pub fn connection_strategy(self, strategy: impl Into<String>) -> Context {
        self.set("connectionStrategy", strategy.into())
    }

    /// `protocol` (a [`Protocol`] or its name).
    pub fn protocol(self, protocol: impl Into<Protocol>) -> Context {
        self.set("protocol", protocol.into().as_str())
    }

    /// Replaces `request` (`query`, `body`, `ip`, `hostname`, `userAgent`, `geoip`, …); a
    /// missing `query` or `body` becomes `{}`.
    pub fn request(mut self, request: impl Into<Value>) -> Context {
        let mut request = request.into();
        if let Some(obj) = request.as_object_mut() {
            obj.entry("query").or_insert_with(|| json!({}));
            obj.entry("body").or_insert_with(|| json!({}));
        }
        self.fields.insert("request".into(), request);
        self
    }

    /// Sets one field of `request`.
    pub fn request_field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Context {
        let request = self
            .fields
            .entry("request")
            .or_insert_with(|| json!({ "query": {}, "body": {} }));
        if !request.is_object() {
            *request = json!({ "query": {}, "body": {} });
        }
        if let Some(obj) = request.as_object_mut() {
            obj.insert(key.into(), value.into());
        }
        self
    }

    /// `request.query`: the authorize parameters.
    pub fn query(self, query: impl Into<Value>) -> Context {
        self.request_field("query", object_or_empty(query.into()))
    }

    /// `request.body`: the token request's fields, without its secrets.
    pub fn body(self, body: impl Into<Value>) -> Context {
        self.request_field("body", object_or_empty(body.into()))
    }

    /// `request.ip`.
    pub fn ip(self, ip: impl Into<String>) -> Context {
        self.request_field("ip", ip.into())
    }

    /// `request.hostname`.
    pub fn hostname(self, hostname: impl Into<String>) -> Context {
        self.request_field("hostname", hostname.into())
    }

    /// `request.userAgent`.
    pub fn user_agent(self, user_agent: impl Into<String>) -> Context {
        self.request_field("userAgent", user_agent.into())
    }

    /// `stats.loginsCount` (a first login sees 1).
    pub fn logins_count(self, count: i64) -> Context {
        self.set("stats", json!({ "loginsCount": count }))
    }

    /// `sessionID`.
    pub fn session_id(self, session_id: impl Into<String>) -> Context {
        self.set("sessionID", session_id.into())
    }

    /// `tenant`.
    pub fn tenant(self, tenant: impl Into<String>) -> Context {
        self.set("tenant", tenant.into())
    }

    /// `audience`: the API identifier requested.
    pub fn audience(self, audience: impl Into<String>) -> Context {
        self.set("audience", audience.into())
    }

    /// Replaces `authentication.methods` with `(name, unix seconds)` pairs, e.g.
    /// `[("pwd", t), ("mfa", t)]`; the timestamps are given to rules in milliseconds, as
    /// Auth0 does.
    pub fn authentication_methods<S: Into<String>>(
        self,
        methods: impl IntoIterator<Item = (S, i64)>,
    ) -> Context {
        let methods: Vec<Value> = methods
            .into_iter()
            .map(|(name, at)| json!({ "name": name.into(), "timestamp": at * 1000 }))
            .collect();
        self.set("authentication", json!({ "methods": methods }))
    }

    /// `authorization.roles`.
    pub fn roles(self, roles: impl Into<Value>) -> Context {
        self.set("authorization", json!({ "roles": roles.into() }))
    }
}

json_object_conversions!(Context, "context", "clientID");

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

    #[test]
    fn context_setters_reach_nested_fields() {
        let c = Value::from(
            Context::refresh("app")
                .ip("10.0.0.1")
                .body(json!({"grant_type": "refresh_token"}))
                .logins_count(7)
                .authentication_methods([("pwd", 10), ("mfa", 11)])
                .roles(vec!["admin"]),
        );
        assert_eq!(c["protocol"], "oauth2-refresh-token");
        assert_eq!(
            c["request"],
            json!({"query": {}, "body": {"grant_type": "refresh_token"}, "ip": "10.0.0.1"})
        );
        assert_eq!(c["stats"]["loginsCount"], 7);
        assert_eq!(
            c["authentication"]["methods"],
            json!([{"name": "pwd", "timestamp": 10000}, {"name": "mfa", "timestamp": 11000}])
        );
        assert_eq!(c["authorization"]["roles"], json!(["admin"]));
    }

    #[test]
    fn context_request_keeps_extra_fields_and_fills_query_and_body() {
        let c = Context::login("app").request(json!({"geoip": {"country_code": "NL"}}));
        assert_eq!(
            c.get("request"),
            Some(&json!({"geoip": {"country_code": "NL"}, "query": {}, "body": {}}))
        );
        assert_eq!(c.client_id(), "app");
        assert!(Context::try_from(json!({"clientName": "x"})).is_err());
    }
}

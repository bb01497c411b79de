//! [`Context`]: the Auth0-shaped rule `context` object, as the token server builds it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{object_or_empty, unix_now, ModelError, Protocol};

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

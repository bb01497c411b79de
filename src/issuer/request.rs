//! [`TokenRequest`]: one issuance as the embedding server describes it, owned (no borrowed
//! configuration), so it moves into `spawn_blocking` as it is.

use serde_json::{json, Map, Value};

use crate::model::{unix_now, Protocol};

/// The default access token lifetime: 24 hours.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: u64 = 86_400;

/// The default ID token lifetime: 10 hours.
pub const DEFAULT_ID_TOKEN_LIFETIME: u64 = 36_000;

/// Everything the issuer needs to know about one issuance: the client, the user, the audience,
/// the requested scopes and the flow.
///
/// ```
/// use claimrules::{Protocol, TokenRequest, User};
///
/// let request = TokenRequest::new("my-app", User::new("auth0|42"))
///     .client_name("My App")
///     .audience("https://api.example.com")
///     .scopes(["openid", "read:contacts"])
///     .protocol(Protocol::Password);
/// assert_eq!(request.client_id(), "my-app");
/// ```
///
/// Unless [`TokenRequest::request`] sets `context.request` itself, the rules see the client id,
/// the requested scope (space-separated, RFC 6749 §3.3) and the audience as the flow would have
/// sent them: in `context.request.query` for a login, in `context.request.body` for a grant of
/// the token endpoint ([`Protocol::uses_token_endpoint`]), so a rule reading
/// `context.request.query.scope` (or `.body.scope`) sees what was asked for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub(crate) client_id: String,
    pub(crate) client_name: Option<String>,
    pub(crate) client_metadata: Map<String, Value>,
    pub(crate) audience: Option<String>,
    pub(crate) user: Value,
    pub(crate) scopes: Vec<String>,
    pub(crate) base_scope: Option<Vec<String>>,
    pub(crate) nonce: Option<String>,
    pub(crate) auth_time: i64,
    pub(crate) protocol: Protocol,
    pub(crate) request: Option<Value>,
    pub(crate) logins_count: i64,
    pub(crate) session_id: Option<String>,
    pub(crate) access_token_lifetime: u64,
    pub(crate) id_token_lifetime: u64,
}

impl TokenRequest {
    /// A request of `client_id` for `user` (a [`crate::User`] or its JSON): an interactive
    /// login ([`Protocol::AuthorizationCode`]) authenticated now, no audience, no scopes,
    /// `clientName` = the client id, empty `clientMetadata`, `loginsCount` from the user's
    /// `logins_count` (1 when absent), no session, the default lifetimes
    /// ([`DEFAULT_ACCESS_TOKEN_LIFETIME`], [`DEFAULT_ID_TOKEN_LIFETIME`]).
    pub fn new(client_id: impl Into<String>, user: impl Into<Value>) -> TokenRequest {
        let user = user.into();
        let logins_count = user
            .get("logins_count")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        TokenRequest {
            client_id: client_id.into(),
            client_name: None,
            client_metadata: Map::new(),
            audience: None,
            user,
            scopes: Vec::new(),
            base_scope: None,
            nonce: None,
            auth_time: unix_now(),
            protocol: Protocol::AuthorizationCode,
            request: None,
            logins_count,
            session_id: None,
            access_token_lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
            id_token_lifetime: DEFAULT_ID_TOKEN_LIFETIME,
        }
    }

    /// A request for a client of `claimrules.toml`: its id, name, metadata and ID token
    /// lifetime.
    #[cfg(feature = "server")]
    pub fn for_client(
        client: &crate::config::ClientConfig,
        user: impl Into<Value>,
    ) -> TokenRequest {
        let mut req = TokenRequest::new(client.client_id.clone(), user)
            .client_metadata(client.metadata.clone())
            .id_token_lifetime(client.id_token_lifetime);
        req.client_name = client.name.clone();
        req
    }

    /// The audience and access token lifetime of an API of `claimrules.toml`.
    #[cfg(feature = "server")]
    pub fn api(self, api: &crate::config::ApiConfig) -> TokenRequest {
        self.audience(api.identifier.clone())
            .access_token_lifetime(api.token_lifetime)
    }

    /// `context.clientName` (default: the client id).
    pub fn client_name(mut self, name: impl Into<String>) -> TokenRequest {
        self.client_name = Some(name.into());
        self
    }

    /// `context.clientMetadata`: a JSON object (anything else is `{}`).
    pub fn client_metadata(mut self, metadata: impl Into<Value>) -> TokenRequest {
        self.client_metadata = match metadata.into() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self
    }

    /// The API the access token is for: its `aud` and `context.audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> TokenRequest {
        self.audience = Some(audience.into());
        self
    }

    /// The requested scopes, already checked against what the client may ask for: the access
    /// token's scope unless a rule rewrites it; `openid` adds an ID token, `profile` and `email`
    /// its profile and email claims.
    pub fn scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> TokenRequest {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The access token's scope before the rules run, when it differs from
    /// [`TokenRequest::scopes`] (on refresh: the scope the rules left at login). The rules'
    /// rewrite is compared with it to tell whether the scope changed.
    pub fn base_scope<S: Into<String>>(
        mut self,
        scope: impl IntoIterator<Item = S>,
    ) -> TokenRequest {
        self.base_scope = Some(scope.into_iter().map(Into::into).collect());
        self
    }

    /// The OIDC `nonce` for the ID token.
    pub fn nonce(mut self, nonce: impl Into<String>) -> TokenRequest {
        self.nonce = Some(nonce.into());
        self
    }

    /// When the user authenticated (unix seconds): the ID token's `auth_time` and the
    /// timestamp of `context.authentication.methods`.
    pub fn auth_time(mut self, unix_seconds: i64) -> TokenRequest {
        self.auth_time = unix_seconds;
        self
    }

    /// The flow (`context.protocol`).
    pub fn protocol(mut self, protocol: impl Into<Protocol>) -> TokenRequest {
        self.protocol = protocol.into();
        self
    }

    /// `context.request` as it is (`query`, `body`, `ip`, `hostname`, `userAgent`, `geoip`, …;
    /// a missing `query` or `body` becomes `{}`), instead of the one made from the scopes.
    pub fn request(mut self, request: impl Into<Value>) -> TokenRequest {
        self.request = Some(request.into());
        self
    }

    /// `context.stats.loginsCount`.
    pub fn logins_count(mut self, count: i64) -> TokenRequest {
        self.logins_count = count;
        self
    }

    /// `context.sessionID`.
    pub fn session_id(mut self, session_id: impl Into<String>) -> TokenRequest {
        self.session_id = Some(session_id.into());
        self
    }

    /// The access token's lifetime in seconds (`exp` − `iat`, and the response's `expires_in`).
    pub fn access_token_lifetime(mut self, seconds: u64) -> TokenRequest {
        self.access_token_lifetime = seconds;
        self
    }

    /// The ID token's lifetime in seconds.
    pub fn id_token_lifetime(mut self, seconds: u64) -> TokenRequest {
        self.id_token_lifetime = seconds;
        self
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The user as given.
    pub fn user(&self) -> &Value {
        &self.user
    }

    /// `context.request`: the caller's, or the one made from the client id, the scopes and the
    /// audience (see the type's documentation).
    pub(crate) fn context_request(&self) -> Value {
        if let Some(request) = &self.request {
            return request.clone();
        }
        let mut params = Map::new();
        params.insert("client_id".into(), json!(self.client_id));
        if !self.scopes.is_empty() {
            params.insert("scope".into(), json!(self.scopes.join(" ")));
        }
        if let Some(audience) = &self.audience {
            params.insert("audience".into(), json!(audience));
        }
        if self.protocol.uses_token_endpoint() {
            json!({"query": {}, "body": params})
        } else {
            json!({"query": params, "body": {}})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_takes_logins_count_from_the_user() {
        let r = TokenRequest::new("c", crate::User::new("u").logins_count(5));
        assert_eq!(r.logins_count, 5);
        assert_eq!(r.protocol, Protocol::AuthorizationCode);
        let r = TokenRequest::new("c", json!({"user_id": "u"})).scopes(["a", "b"]);
        assert_eq!(r.logins_count, 1);
        assert_eq!(r.scopes, ["a", "b"]);
    }

    #[test]
    fn requested_scopes_reach_the_query_of_a_login_and_the_body_of_a_grant() {
        let login = TokenRequest::new("web", json!({"user_id": "u"}))
            .audience("https://api.example.com")
            .scopes(["openid", "write:contacts"]);
        let params = json!({"client_id": "web", "scope": "openid write:contacts",
                            "audience": "https://api.example.com"});
        assert_eq!(
            login.context_request(),
            json!({"query": params, "body": {}})
        );
        let refresh = login.clone().protocol(Protocol::RefreshToken);
        assert_eq!(
            refresh.context_request(),
            json!({"query": {}, "body": params})
        );
        let own = login.request(json!({"ip": "10.0.0.1"}));
        assert_eq!(own.context_request(), json!({"ip": "10.0.0.1"}));
    }
}

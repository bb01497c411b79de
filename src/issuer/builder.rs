//! Building an [`Issuer`] and its requests from plain inputs, for code that embeds claimrules in
//! its own token server (no config file, store or HTTP server needed).
//!
//! ```
//! use claimrules::config::{ApiConfig, ClientConfig, SigningAlg};
//! use claimrules::issuer::{Issuer, SigningKey, TokenRequest};
//! use claimrules::{RuleSet, User};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let issuer = Issuer::builder("https://login.example.com")
//!     .rules(RuleSet::from_sources(vec![], json!({}), Default::default())?)
//!     .key(SigningKey::generate(SigningAlg::ES256)?)
//!     .build()?;
//! assert_eq!(issuer.issuer(), "https://login.example.com/");
//!
//! let client = ClientConfig::new("my-app");
//! let api = ApiConfig::new("https://api.example.com");
//! let request = TokenRequest::new(&client, User::new("auth0|42"))
//!     .api(&api)
//!     .scopes(["openid", "read:contacts"])
//!     .nonce("n-0S6");
//! let issued = issuer.issue(&request)?;
//! assert!(issued.id_token.is_some(), "openid was granted");
//! assert_eq!(issued.expires_in, 86400);
//! # Ok(()) }
//! ```

use serde_json::{json, Value};

use super::{unix_now, Issuer, KeyRing, Protocol, SigningKey, TokenRequest};
use crate::config::{ApiConfig, ClientConfig};
use crate::rules::RuleSet;
use crate::watch::HotRules;

/// Why an [`IssuerBuilder`] could not build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The issuer URL is not an absolute `http(s)` URL with a host and without query or fragment.
    #[error("issuer URL {url:?} is not usable: {reason}")]
    IssuerUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No rules were given ([`IssuerBuilder::rules`]).
    #[error("no rules: call .rules(..) with a RuleSet or HotRules (an empty RuleSet is fine)")]
    NoRules,
    /// No signing key was given ([`IssuerBuilder::key`] / [`IssuerBuilder::keys`]).
    #[error("no signing key: call .key(..) or .keys(..) with a ring that has a signing key")]
    NoSigningKey,
}

/// Builds an [`Issuer`]; see [`Issuer::builder`].
#[derive(Debug)]
#[must_use = "call .build()"]
pub struct IssuerBuilder {
    issuer: String,
    rules: Option<HotRules>,
    keys: Option<KeyRing>,
}

impl Issuer {
    /// Starts building an issuer for `issuer_url` (the tokens' `iss`; a trailing slash is
    /// added when missing). Rules and a signing key are required.
    ///
    /// The namespace rule's reserved hosts come from the rule set's
    /// [`RuleSetOptions`](crate::rules::RuleSetOptions): to refuse claims under the issuer's
    /// own host, as `claimrules serve` does, list it in `namespace.reserved_hosts` when
    /// compiling the rules.
    pub fn builder(issuer_url: impl Into<String>) -> IssuerBuilder {
        IssuerBuilder {
            issuer: issuer_url.into(),
            rules: None,
            keys: None,
        }
    }
}

impl IssuerBuilder {
    /// The rules: a [`RuleSet`] (fixed) or a [`HotRules`] (reloadable, e.g. watching a folder).
    pub fn rules(mut self, rules: impl Into<HotRules>) -> IssuerBuilder {
        self.rules = Some(rules.into());
        self
    }

    /// Signs with this key and publishes it in the JWKS.
    pub fn key(mut self, key: SigningKey) -> IssuerBuilder {
        self.keys = Some(KeyRing::single(key));
        self
    }

    /// Signs with the ring's signing key and publishes all its keys (roll-over).
    pub fn keys(mut self, keys: KeyRing) -> IssuerBuilder {
        self.keys = Some(keys);
        self
    }

    /// The issuer.
    pub fn build(self) -> Result<Issuer, BuildError> {
        check_issuer_url(&self.issuer)?;
        let rules = self.rules.ok_or(BuildError::NoRules)?;
        let keys = self
            .keys
            .filter(|k| k.signing().is_ok())
            .ok_or(BuildError::NoSigningKey)?;
        Ok(Issuer::new(&self.issuer, keys, rules))
    }
}

fn check_issuer_url(raw: &str) -> Result<(), BuildError> {
    let fail = |reason: &str| BuildError::IssuerUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(raw).map_err(|e| fail(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(fail("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(fail("it may not have a query or fragment"));
    }
    Ok(())
}

impl From<RuleSet> for HotRules {
    /// A rule set that is never reloaded ([`HotRules::fixed`]).
    fn from(set: RuleSet) -> HotRules {
        HotRules::fixed(set)
    }
}

impl<'a> TokenRequest<'a> {
    /// A request for `client` and `user` (a [`crate::User`] or its JSON): Authorization Code
    /// protocol, no API, no scopes, authenticated now, `loginsCount` from the user's
    /// `logins_count` (1 when absent), empty `context.request`, no session.
    ///
    /// Fields not covered by a setter are public: use struct update syntax, e.g.
    /// `TokenRequest { protocol: Protocol::RefreshToken, ..TokenRequest::new(&client, user) }`.
    pub fn new(client: &'a ClientConfig, user: impl Into<Value>) -> TokenRequest<'a> {
        let user = user.into();
        let logins_count = user
            .get("logins_count")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        TokenRequest {
            client,
            api: None,
            user,
            scopes: Vec::new(),
            base_scope: None,
            nonce: None,
            auth_time: unix_now(),
            protocol: Protocol::AuthorizationCode,
            request: json!({}),
            logins_count,
            session_id: None,
        }
    }

    /// The API (audience) the access token is for.
    pub fn api(mut self, api: &'a ApiConfig) -> TokenRequest<'a> {
        self.api = Some(api);
        self
    }

    /// The granted scopes (`openid` adds an ID token).
    pub fn scopes<S: Into<String>>(
        mut self,
        scopes: impl IntoIterator<Item = S>,
    ) -> TokenRequest<'a> {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The OIDC `nonce` for the ID token.
    pub fn nonce(mut self, nonce: impl Into<String>) -> TokenRequest<'a> {
        self.nonce = Some(nonce.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningAlg;

    fn empty_rules() -> RuleSet {
        RuleSet::from_sources(vec![], json!({}), Default::default()).unwrap()
    }

    #[test]
    fn builder_requires_rules_key_and_a_usable_url() {
        let key = || SigningKey::generate(SigningAlg::EdDSA).unwrap();
        let err = Issuer::builder("https://x.example/").key(key()).build();
        assert_eq!(err.unwrap_err(), BuildError::NoRules);
        let err = Issuer::builder("https://x.example/")
            .rules(empty_rules())
            .build();
        assert_eq!(err.unwrap_err(), BuildError::NoSigningKey);
        let err = Issuer::builder("https://x.example/")
            .rules(empty_rules())
            .keys(KeyRing::default())
            .build();
        assert_eq!(err.unwrap_err(), BuildError::NoSigningKey);
        for bad in [
            "x.example",
            "ftp://x.example/",
            "https://x.example/?a=1",
            "https:///",
        ] {
            let err = Issuer::builder(bad)
                .rules(empty_rules())
                .key(key())
                .build()
                .unwrap_err();
            assert!(matches!(err, BuildError::IssuerUrl { .. }), "{bad}: {err}");
        }
        let ok = Issuer::builder("https://x.example/tenant")
            .rules(empty_rules())
            .key(key())
            .build()
            .unwrap();
        assert_eq!(ok.issuer(), "https://x.example/tenant/");
    }

    #[test]
    fn token_request_new_takes_logins_count_from_the_user() {
        let client = ClientConfig::new("c");
        let r = TokenRequest::new(&client, crate::User::new("u").logins_count(5));
        assert_eq!(r.logins_count, 5);
        assert_eq!(r.protocol, Protocol::AuthorizationCode);
        let r = TokenRequest::new(&client, json!({"user_id": "u"})).scopes(["a", "b"]);
        assert_eq!(r.logins_count, 1);
        assert_eq!(r.scopes, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn issuer_context_keeps_the_server_shape() {
        let issuer = Issuer::builder("https://login.example.com/")
            .rules(empty_rules())
            .key(SigningKey::generate(SigningAlg::EdDSA).unwrap())
            .build()
            .unwrap();
        let mut client = ClientConfig::new("web");
        client.name = Some("Web App".into());
        client.metadata.insert("tier".into(), json!("gold"));
        let api = ApiConfig::new("https://api.example.com");
        let req = TokenRequest {
            auth_time: 1_700_000_000,
            logins_count: 3,
            session_id: Some("s1".into()),
            request: json!({"query": {"scope": "openid"}, "ip": "10.0.0.1"}),
            ..TokenRequest::new(
                &client,
                json!({"user_id": "auth0|a", "app_metadata": {"roles": ["admin"]}}),
            )
            .api(&api)
        };
        assert_eq!(
            issuer.context(&req),
            json!({
                "clientID": "web",
                "clientName": "Web App",
                "clientMetadata": {"tier": "gold"},
                "connection": "Username-Password-Authentication",
                "connectionStrategy": "auth0",
                "protocol": "oidc-basic-profile",
                "request": {"query": {"scope": "openid"}, "body": {}, "ip": "10.0.0.1"},
                "stats": {"loginsCount": 3},
                "sessionID": "s1",
                "tenant": "login.example.com",
                "audience": "https://api.example.com",
                "authentication": {"methods": [{"name": "pwd", "timestamp": 1_700_000_000_000i64}]},
                "authorization": {"roles": ["admin"]},
                "accessToken": {},
                "idToken": {},
            })
        );
    }

    #[test]
    fn a_caller_context_reaches_the_rules_and_the_claims_are_signed() {
        let rules = RuleSet::from_sources(
            vec![(
                "geo".into(),
                r#"context.accessToken["https://example.com/country"] =
                       context.request.geoip.country_code;"#
                    .into(),
            )],
            json!({}),
            Default::default(),
        )
        .unwrap();
        let issuer = Issuer::builder("https://login.example.com/")
            .rules(rules)
            .key(SigningKey::generate(SigningAlg::ES256).unwrap())
            .build()
            .unwrap();
        let client = ClientConfig::new("web");
        let api = ApiConfig::new("https://api.example.com");
        let req = TokenRequest::new(&client, crate::User::new("auth0|a")).api(&api);
        let ctx = crate::Context::login("web")
            .audience("https://api.example.com")
            .request_field("geoip", json!({"country_code": "NL"}));
        let claims = issuer.run_rules_with_context(&req, ctx).unwrap();
        assert_eq!(claims.access_token["https://example.com/country"], "NL");
        let issued = issuer.sign(&req, &claims).unwrap();
        let verified = crate::verify(
            &issued.access_token,
            &issuer.jwks(),
            &crate::VerifyOptions::new("https://login.example.com/", "https://api.example.com"),
        )
        .unwrap();
        assert_eq!(verified["https://example.com/country"], "NL");
        assert_eq!(verified["sub"], "auth0|a");
    }
}

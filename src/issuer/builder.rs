//! Building an [`Issuer`] and its requests from plain inputs, for code that embeds claimrules in
//! its own token server (no config file, store or HTTP server needed).
//!
//! ```
//! use claimrules::{Issuer, RuleSet, SigningAlg, SigningKey, TokenRequest, User};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let issuer = Issuer::builder("https://login.example.com")
//!     .rules(RuleSet::from_sources(vec![], json!({}), Default::default())?)
//!     .key(SigningKey::generate(SigningAlg::ES256)?)
//!     .build()?;
//! assert_eq!(issuer.issuer(), "https://login.example.com/");
//!
//! let request = TokenRequest::new("my-app", User::new("auth0|42"))
//!     .audience("https://api.example.com")
//!     .scopes(["openid", "read:contacts"])
//!     .nonce("n-0S6");
//! let issued = issuer.issue(&request)?;
//! assert!(issued.id_token.is_some(), "openid was granted");
//! assert_eq!(issued.expires_in, 86400);
//! # Ok(()) }
//! ```

use super::{Issuer, KeyRing, SigningKey};
use crate::rules::HotRules;
use crate::rules::RuleSet;

/// Why an [`IssuerBuilder`] could not build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The issuer URL is not an absolute `http(s)` URL with a host and without query or fragment.
    #[error("issuer URL {url:?} is not usable: {reason}")]
    IssuerUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
        /// The URL parser's error, when it refused the URL.
        #[source]
        source: Option<url::ParseError>,
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
    reserve_host: bool,
    userinfo_audience: bool,
}

impl Issuer {
    /// Starts building an issuer for `issuer_url` (the tokens' `iss`; a trailing slash is
    /// added when missing). Rules and a signing key are required.
    ///
    /// By default the issuer's own host is reserved for claim keys, on top of the rule set's
    /// [`RuleSetOptions`](crate::RuleSetOptions) `namespace.reserved_hosts` (a claim
    /// `https://login.example.com/x` is refused by an issuer at `https://login.example.com/`,
    /// as `claimrules serve` refuses it), and access tokens granted `openid` also carry the
    /// userinfo URL as an audience.
    pub fn builder(issuer_url: impl Into<String>) -> IssuerBuilder {
        IssuerBuilder {
            issuer: issuer_url.into(),
            rules: None,
            keys: None,
            reserve_host: true,
            userinfo_audience: true,
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

    /// Whether claim keys under the issuer's own host (and its subdomains) are refused, as the
    /// namespace rule refuses a reserved host (default `true`).
    pub fn reserve_issuer_host(mut self, reserve: bool) -> IssuerBuilder {
        self.reserve_host = reserve;
        self
    }

    /// Whether an access token granted `openid` also has `{issuer}userinfo` as an audience, and
    /// a token without an API has it as its only one (default `true`, for a server that serves
    /// OIDC userinfo). With `false` the audience is the API alone, and the client id when the
    /// request names no API (RFC 9068 §3 requires an `aud`).
    pub fn userinfo_audience(mut self, userinfo: bool) -> IssuerBuilder {
        self.userinfo_audience = userinfo;
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
        Ok(Issuer::with_settings(
            &self.issuer,
            keys,
            rules,
            self.reserve_host,
            self.userinfo_audience,
        ))
    }
}

fn check_issuer_url(raw: &str) -> Result<(), BuildError> {
    let fail = |reason: &str| BuildError::IssuerUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
        source: None,
    };
    let url = url::Url::parse(raw).map_err(|e| BuildError::IssuerUrl {
        url: raw.to_owned(),
        reason: e.to_string(),
        source: Some(e),
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::{SigningAlg, TokenRequest};
    use serde_json::{json, Value};

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
    fn issuer_context_keeps_the_server_shape() {
        let issuer = Issuer::builder("https://login.example.com/")
            .rules(empty_rules())
            .key(SigningKey::generate(SigningAlg::EdDSA).unwrap())
            .build()
            .unwrap();
        let req = TokenRequest::new(
            "web",
            json!({"user_id": "auth0|a", "app_metadata": {"roles": ["admin"]}}),
        )
        .client_name("Web App")
        .client_metadata(json!({"tier": "gold"}))
        .audience("https://api.example.com")
        .auth_time(1_700_000_000)
        .logins_count(3)
        .session_id("s1")
        .request(json!({"query": {"scope": "openid"}, "ip": "10.0.0.1"}));
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
        let req = TokenRequest::new("web", crate::User::new("auth0|a"))
            .audience("https://api.example.com");
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

    fn issuer_with(rules: RuleSet, builder: impl FnOnce(IssuerBuilder) -> IssuerBuilder) -> Issuer {
        builder(
            Issuer::builder("https://login.example.com/")
                .rules(rules)
                .key(SigningKey::generate(SigningAlg::EdDSA).unwrap()),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn the_issuers_host_is_reserved_unless_turned_off() {
        let source = r#"context.accessToken["https://login.example.com/x"] = 1;
                        context.accessToken["https://example.com/y"] = 2;"#;
        let rules = || {
            RuleSet::from_sources(
                vec![("r".into(), source.into())],
                json!({}),
                Default::default(),
            )
            .unwrap()
        };
        let req = TokenRequest::new("web", crate::User::new("auth0|a"));
        let claims = issuer_with(rules(), |b| b).run_rules(&req).unwrap();
        assert_eq!(
            Value::Object(claims.access_token),
            json!({"https://example.com/y": 2})
        );
        let claims = issuer_with(rules(), |b| b.reserve_issuer_host(false))
            .run_rules(&req)
            .unwrap();
        assert_eq!(claims.access_token["https://login.example.com/x"], 1);
        // A set that already reserves the host is used as it is.
        let mut options = crate::RuleSetOptions::default();
        options.namespace.reserved_hosts = vec!["example.com".into()];
        let set =
            RuleSet::from_sources(vec![("r".into(), source.into())], json!({}), options).unwrap();
        let claims = issuer_with(set, |b| b).run_rules(&req).unwrap();
        assert!(claims.access_token.is_empty(), "{:?}", claims.access_token);
    }

    #[test]
    fn the_userinfo_audience_can_be_left_out() {
        let aud = |issuer: &Issuer, req: &TokenRequest| {
            let issued = issuer.issue(req).unwrap();
            let payload = issued.access_token.split('.').nth(1).unwrap().to_owned();
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                    .unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()["aud"].clone()
        };
        let api = TokenRequest::new("web", crate::User::new("auth0|a"))
            .audience("https://api.example.com")
            .scopes(["openid"]);
        let bare = TokenRequest::new("web", crate::User::new("auth0|a")).scopes(["openid"]);
        let with = issuer_with(empty_rules(), |b| b);
        assert_eq!(
            aud(&with, &api),
            json!([
                "https://api.example.com",
                "https://login.example.com/userinfo"
            ])
        );
        assert_eq!(
            aud(&with, &bare),
            json!("https://login.example.com/userinfo")
        );
        let without = issuer_with(empty_rules(), |b| b.userinfo_audience(false));
        assert_eq!(aud(&without, &api), json!("https://api.example.com"));
        assert_eq!(aud(&without, &bare), json!("web"));
    }

    #[test]
    fn an_issuer_moves_into_a_blocking_task_with_its_request() {
        fn shareable<T: Clone + Send + Sync + 'static>(_: &T) {}
        let issuer = issuer_with(empty_rules(), |b| b);
        shareable(&issuer);
        let req = TokenRequest::new("web", crate::User::new("auth0|a"));
        shareable(&req);
        let (issuer2, req2) = (issuer.clone(), req.clone());
        let issued = std::thread::spawn(move || issuer2.issue(&req2))
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(issued.rules_version, 1);
    }
}

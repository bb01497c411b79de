//! The issuer pipeline: context → rules → namespace rule → standard claims → signed tokens.
//!
//! Standard claims are written last, so no rule can override them; the namespace rule has
//! already filtered the rules' claims in [`crate::rules`].

mod builder;
pub mod keys;
pub mod verify;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::{json, Map, Value};

use crate::config::{ApiConfig, ClientConfig};
use crate::model::Context;
use crate::rules::{Outcome, RuleError};
use crate::watch::HotRules;
pub use builder::{BuildError, IssuerBuilder};
pub use keys::{KeyError, KeyRing, SigningKey};

/// Errors of the issuer.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The rules denied or failed.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Which flow is issuing, as `context.protocol` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Authorization Code grant (`oidc-basic-profile`).
    AuthorizationCode,
    /// Refresh token grant (`oauth2-refresh-token`).
    RefreshToken,
}

impl Protocol {
    /// The `context.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::AuthorizationCode => "oidc-basic-profile",
            Protocol::RefreshToken => "oauth2-refresh-token",
        }
    }
}

/// Everything the pipeline needs to know about one issuance.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    /// The client.
    pub client: &'a ClientConfig,
    /// The API (audience), when one was requested.
    pub api: Option<&'a ApiConfig>,
    /// The Auth0-shaped user.
    pub user: Value,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The access token's scope before the rules run, when it differs from `scopes` (on refresh:
    /// the scope the rules left at login).
    pub base_scope: Option<Vec<String>>,
    /// The OIDC nonce.
    pub nonce: Option<String>,
    /// When the user logged in (unix seconds).
    pub auth_time: i64,
    /// The flow.
    pub protocol: Protocol,
    /// `context.request` (query, body, ip, hostname, userAgent).
    pub request: Value,
    /// `context.stats.loginsCount`.
    pub logins_count: i64,
    /// `context.sessionID`.
    pub session_id: Option<String>,
}

/// The result of the rules for one grant, ready to be signed now or later (e.g. at code exchange).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RuleClaims {
    /// The user as the rules left it.
    pub user: Value,
    /// Custom access-token claims.
    pub access_token: Map<String, Value>,
    /// Custom ID-token claims.
    pub id_token: Map<String, Value>,
    /// The access token's scope after the rules.
    pub scope: Vec<String>,
    /// Whether the rules changed the scope.
    pub scope_changed: bool,
    /// The rule-set version that produced these claims.
    pub rules_version: u64,
    /// Metadata updates the rules asked the host to persist.
    #[serde(default, skip_serializing_if = "crate::rules::MetadataUpdates::is_empty")]
    pub metadata: crate::rules::MetadataUpdates,
}

/// Signed tokens.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The access token (JWT, `typ` `at+jwt`).
    pub access_token: String,
    /// The ID token, when `openid` was granted.
    pub id_token: Option<String>,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
    /// The access token's scope.
    pub scope: Vec<String>,
    /// Whether the rules changed the scope (the token response then carries `scope`).
    pub scope_changed: bool,
    /// The access token's `jti`.
    pub jti: String,
    /// The rule-set version that computed the claims.
    pub rules_version: u64,
}

/// Issues tokens for one tenant: runs the rules and signs with the current key.
pub struct Issuer {
    issuer: String,
    userinfo: String,
    keys: ArcSwap<KeyRing>,
    rules: HotRules,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Issuer {
    /// An issuer for `issuer_url` (with trailing slash) signing with `keys`.
    pub fn new(issuer_url: &str, keys: KeyRing, rules: HotRules) -> Issuer {
        let issuer = if issuer_url.ends_with('/') {
            issuer_url.to_owned()
        } else {
            format!("{issuer_url}/")
        };
        Issuer {
            userinfo: format!("{issuer}userinfo"),
            issuer,
            keys: ArcSwap::from_pointee(keys),
            rules,
        }
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The userinfo endpoint URL (also an `aud` of access tokens when `openid` is granted).
    pub fn userinfo_url(&self) -> &str {
        &self.userinfo
    }

    /// The hot rule set.
    pub fn rules(&self) -> &HotRules {
        &self.rules
    }

    /// The current keys.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.load_full()
    }

    /// Replaces the keys (roll-over).
    pub fn set_keys(&self, keys: KeyRing) {
        self.keys.store(Arc::new(keys));
    }

    /// The public keys as a JWKS document (what `/.well-known/jwks.json` serves).
    pub fn jwks(&self) -> Value {
        self.keys().jwks()
    }

    /// The Auth0-shaped `context` for a request.
    pub fn context(&self, req: &TokenRequest<'_>) -> Value {
        let tenant = url::Url::parse(&self.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let roles = req
            .user
            .pointer("/app_metadata/roles")
            .cloned()
            .unwrap_or_else(|| json!([]));
        let name = req
            .client
            .name
            .clone()
            .unwrap_or_else(|| req.client.client_id.clone());
        let mut ctx = Context::new(req.client.client_id.clone(), req.protocol)
            .client_name(name)
            .client_metadata(Value::Object(req.client.metadata.clone()))
            .request(req.request.clone())
            .logins_count(req.logins_count)
            .tenant(tenant)
            .authentication_methods([("pwd", req.auth_time)])
            .roles(roles);
        if let Some(sid) = &req.session_id {
            ctx = ctx.session_id(sid.clone());
        }
        if let Some(api) = req.api {
            ctx = ctx.audience(api.identifier.clone());
        }
        ctx.into_value()
    }

    /// Runs the rules for a request (on the calling thread; rules are CPU-bound).
    pub fn run_rules(&self, req: &TokenRequest<'_>) -> Result<RuleClaims, RuleError> {
        self.run_rules_with_context(req, self.context(req))
    }

    /// Runs the rules for a request with a `context` of the caller's making (e.g.
    /// [`Issuer::context`] with extra fields, or a [`Context`]); the claims are signed with
    /// [`Issuer::sign`] as usual.
    pub fn run_rules_with_context(
        &self,
        req: &TokenRequest<'_>,
        context: impl Into<Value>,
    ) -> Result<RuleClaims, RuleError> {
        self.run_rules_traced(req, context).0
    }

    /// Runs the rules like [`Issuer::run_rules_with_context`] and also returns the metadata
    /// updates to persist, which a denial keeps (as on Auth0, a rule may record a refused
    /// attempt) and any other failure drops.
    pub fn run_rules_traced(
        &self,
        req: &TokenRequest<'_>,
        context: impl Into<Value>,
    ) -> (Result<RuleClaims, RuleError>, crate::rules::MetadataUpdates) {
        let loaded = self.rules.current();
        let trace = loaded.set.run_with(
            req.user.clone(),
            context.into(),
            &crate::rules::RunOptions::default(),
        );
        let metadata = trace.metadata;
        let outcome: Outcome = match trace.result {
            Ok(o) => o,
            Err(e) => return (Err(e), metadata),
        };
        for w in &outcome.warnings {
            tracing::warn!(rules_version = loaded.version, "{w}");
        }
        let base = req.base_scope.clone().unwrap_or_else(|| req.scopes.clone());
        let (scope, scope_changed) = match outcome.scope {
            Some(s) => {
                let changed = s != base;
                (s, changed)
            }
            None => (base, false),
        };
        (
            Ok(RuleClaims {
                user: outcome.user,
                access_token: outcome.access_token,
                id_token: outcome.id_token,
                scope,
                scope_changed,
                rules_version: loaded.version,
                metadata: metadata.clone(),
            }),
            metadata,
        )
    }

    /// Runs the rules and signs the tokens.
    pub fn issue(&self, req: &TokenRequest<'_>) -> Result<Issued, IssueError> {
        let claims = self.run_rules(req)?;
        self.sign(req, &claims)
    }

    /// Builds the standard claims, merges the rules' claims under them and signs both tokens.
    pub fn sign(&self, req: &TokenRequest<'_>, rc: &RuleClaims) -> Result<Issued, IssueError> {
        let keys = self.keys();
        let key = keys.signing()?;
        let now = unix_now();
        let sub = rc
            .user
            .get("user_id")
            .or_else(|| req.user.get("user_id"))
            .cloned()
            .unwrap_or(Value::Null);
        let openid = req.scopes.iter().any(|s| s == "openid");
        let lifetime = req.api.map_or(86400, |a| a.token_lifetime);
        let jti = crate::crypto::random_token(16);

        let mut at: Map<String, Value> = rc.access_token.clone();
        let aud = match (req.api, openid) {
            (Some(api), true) => json!([api.identifier, self.userinfo]),
            (Some(api), false) => json!(api.identifier),
            (None, _) => json!(self.userinfo),
        };
        for (k, v) in [
            ("iss", json!(self.issuer)),
            ("sub", sub.clone()),
            ("aud", aud),
            ("iat", json!(now)),
            ("exp", json!(now + lifetime as i64)),
            ("azp", json!(req.client.client_id)),
            ("client_id", json!(req.client.client_id)),
            ("scope", json!(rc.scope.join(" "))),
            ("jti", json!(jti)),
        ] {
            at.insert(k.into(), v);
        }
        let access_token = key.sign_jwt("at+jwt", &Value::Object(at))?;

        let id_token = if openid {
            let mut id = Map::new();
            let has = |s: &str| req.scopes.iter().any(|x| x == s);
            if has("profile") {
                for k in [
                    "name",
                    "nickname",
                    "given_name",
                    "family_name",
                    "picture",
                    "updated_at",
                ] {
                    if let Some(v) = rc.user.get(k).filter(|v| !v.is_null()) {
                        id.insert(k.into(), v.clone());
                    }
                }
            }
            if has("email") {
                for k in ["email", "email_verified"] {
                    if let Some(v) = rc.user.get(k).filter(|v| !v.is_null()) {
                        id.insert(k.into(), v.clone());
                    }
                }
            }
            // Rule claims (namespaced, or OIDC profile overrides) over the user's profile.
            id.extend(rc.id_token.clone());
            for (k, v) in [
                ("iss", json!(self.issuer)),
                ("sub", sub),
                ("aud", json!(req.client.client_id)),
                ("iat", json!(now)),
                ("exp", json!(now + req.client.id_token_lifetime as i64)),
                ("auth_time", json!(req.auth_time)),
                ("at_hash", json!(key.half_hash(&access_token))),
            ] {
                id.insert(k.into(), v);
            }
            if let Some(n) = &req.nonce {
                id.insert("nonce".into(), json!(n));
            }
            Some(key.sign_jwt("JWT", &Value::Object(id))?)
        } else {
            None
        };
        tracing::info!(
            jti = %jti,
            rules_version = rc.rules_version,
            client_id = %req.client.client_id,
            protocol = req.protocol.as_str(),
            "tokens signed"
        );
        Ok(Issued {
            access_token,
            id_token,
            expires_in: lifetime,
            scope: rc.scope.clone(),
            scope_changed: rc.scope_changed,
            jti,
            rules_version: rc.rules_version,
        })
    }
}

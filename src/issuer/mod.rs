//! The issuer pipeline: context → rules → namespace rule → standard claims → signed tokens.
//!
//! Standard claims are written last, so no rule can override them; the namespace rule has
//! already filtered the rules' claims in [`crate::rules`].

mod builder;
pub mod keys;
pub mod oauth;
mod request;
pub mod rotation;
pub mod verify;

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{json, Map, Value};

use crate::model::{unix_now, Context};
use crate::rules::{HotRules, LoadedRules, WatchError};
use crate::rules::{LoadError, Outcome, RuleError, RuleSet};
pub use builder::{BuildError, IssuerBuilder};
pub use keys::{KeyError, KeyRing, SigningAlg, SigningKey};
pub use oauth::{Endpoint, OAuthError};
pub use request::{TokenRequest, DEFAULT_ACCESS_TOKEN_LIFETIME, DEFAULT_ID_TOKEN_LIFETIME};

/// The error behind an issuer error (the crypto library's, a JSON or JWT parser's), shared so
/// that errors holding one stay `Clone`.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the issuer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The rules denied or failed.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why setting up the rules and the issuer failed: one error type for the `?`s of an
/// embedder's start-up (loading rules, watching them, generating or parsing a key, building the
/// issuer).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The rules did not load or compile.
    #[error(transparent)]
    Rules(#[from] LoadError),
    /// The rules folder cannot be watched.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// A key could not be generated or parsed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The issuer could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
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
    #[serde(
        default,
        skip_serializing_if = "crate::rules::MetadataUpdates::is_empty"
    )]
    pub metadata: crate::rules::MetadataUpdates,
}

/// Signed tokens.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
///
/// Cloning is cheap and every clone is the same issuer (keys, rules and settings are shared):
/// move one into `spawn_blocking` or keep one per handler. `Issuer` is `Send + Sync`.
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    userinfo: String,
    userinfo_audience: bool,
    /// The issuer's host, reserved for claim keys on top of the rule set's own reserved hosts.
    reserved_host: Option<String>,
    /// `context.tenant`: the issuer URL's host as written (empty when it has none), parsed once.
    tenant: String,
    keys: ArcSwap<KeyRing>,
    rules: HotRules,
    /// The serving rule set with [`Inner::reserved_host`] added, for the version it was made from.
    derived: ArcSwapOption<Derived>,
}

/// A rule-set version and, when its options do not reserve the issuer's host yet, the same
/// rules with that host reserved.
struct Derived {
    source: Arc<LoadedRules>,
    set: Option<RuleSet>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.inner.issuer)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer for `issuer_url` (with trailing slash) signing with `keys`; its host is
    /// reserved for claim keys, and access tokens granted `openid` also have the userinfo URL
    /// as an audience. [`Issuer::builder`] checks the URL and sets these.
    pub fn new(issuer_url: &str, keys: KeyRing, rules: HotRules) -> Issuer {
        Issuer::with_settings(issuer_url, keys, rules, true, true)
    }

    fn with_settings(
        issuer_url: &str,
        keys: KeyRing,
        rules: HotRules,
        reserve_host: bool,
        userinfo_audience: bool,
    ) -> Issuer {
        let issuer = if issuer_url.ends_with('/') {
            issuer_url.to_owned()
        } else {
            format!("{issuer_url}/")
        };
        let host = url::Url::parse(&issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        let reserved_host = host
            .as_deref()
            .filter(|h| reserve_host && !h.is_empty())
            .map(str::to_ascii_lowercase);
        Issuer {
            inner: Arc::new(Inner {
                userinfo: format!("{issuer}userinfo"),
                issuer,
                userinfo_audience,
                reserved_host,
                tenant: host.unwrap_or_default(),
                keys: ArcSwap::from_pointee(keys),
                rules,
                derived: ArcSwapOption::empty(),
            }),
        }
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The userinfo endpoint URL (also an `aud` of access tokens when `openid` is granted,
    /// unless [`IssuerBuilder::userinfo_audience`] turned that off).
    pub fn userinfo_url(&self) -> &str {
        &self.inner.userinfo
    }

    /// The hot rule set.
    pub fn rules(&self) -> &HotRules {
        &self.inner.rules
    }

    /// The current keys.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.inner.keys.load_full()
    }

    /// Replaces the keys (roll-over), for every clone of this issuer.
    pub fn set_keys(&self, keys: KeyRing) {
        self.inner.keys.store(Arc::new(keys));
    }

    /// The public keys as a JWKS document (what `/.well-known/jwks.json` serves).
    pub fn jwks(&self) -> Value {
        self.keys().jwks()
    }

    /// The Auth0-shaped `context` for a request.
    pub fn context(&self, req: &TokenRequest) -> Value {
        let roles = req
            .user
            .pointer("/app_metadata/roles")
            .cloned()
            .unwrap_or_else(|| json!([]));
        let name = req
            .client_name
            .clone()
            .unwrap_or_else(|| req.client_id.clone());
        let mut ctx = Context::new(req.client_id.clone(), req.protocol.clone())
            .client_name(name)
            .client_metadata(Value::Object(req.client_metadata.clone()))
            .request(req.context_request())
            .logins_count(req.logins_count)
            .tenant(self.inner.tenant.clone())
            .authentication_methods([("pwd", req.auth_time)])
            .roles(roles);
        if let Some(sid) = &req.session_id {
            ctx = ctx.session_id(sid.clone());
        }
        if let Some(audience) = &req.audience {
            ctx = ctx.audience(audience.clone());
        }
        ctx.into_value()
    }

    /// The serving version's rules with the issuer's host reserved, made once per version; `None`
    /// when no host is reserved.
    fn derived(&self, loaded: &Arc<LoadedRules>) -> Option<Arc<Derived>> {
        let host = self.inner.reserved_host.as_deref()?;
        if let Some(d) = self.inner.derived.load_full() {
            if Arc::ptr_eq(&d.source, loaded) {
                return Some(d);
            }
        }
        let reserved = &loaded.set.options().namespace.reserved_hosts;
        let already = !crate::claims::is_namespaced(&format!("https://{host}/"), reserved);
        let d = Arc::new(Derived {
            source: loaded.clone(),
            set: (!already).then(|| loaded.set.with_reserved_hosts(&[host.to_owned()])),
        });
        self.inner.derived.store(Some(d.clone()));
        Some(d)
    }

    /// Runs the rules for a request (on the calling thread; rules are CPU-bound).
    pub fn run_rules(&self, req: &TokenRequest) -> Result<RuleClaims, RuleError> {
        self.run_rules_with_context(req, self.context(req))
    }

    /// Runs the rules for a request with a `context` of the caller's making (e.g.
    /// [`Issuer::context`] with extra fields, or a [`Context`]); the claims are signed with
    /// [`Issuer::sign`] as usual.
    pub fn run_rules_with_context(
        &self,
        req: &TokenRequest,
        context: impl Into<Value>,
    ) -> Result<RuleClaims, RuleError> {
        self.run_rules_traced(req, context).0
    }

    /// Runs the rules like [`Issuer::run_rules_with_context`] and also returns the metadata
    /// updates to persist, which a denial keeps (as on Auth0, a rule may record a refused
    /// attempt) and any other failure drops.
    pub fn run_rules_traced(
        &self,
        req: &TokenRequest,
        context: impl Into<Value>,
    ) -> (Result<RuleClaims, RuleError>, crate::rules::MetadataUpdates) {
        let loaded = self.inner.rules.current();
        let derived = self.derived(&loaded);
        let set = derived
            .as_ref()
            .and_then(|d| d.set.as_ref())
            .unwrap_or(&loaded.set);
        let trace = set.run_borrowed(
            &req.user,
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
    pub fn issue(&self, req: &TokenRequest) -> Result<Issued, IssueError> {
        let claims = self.run_rules(req)?;
        self.sign(req, &claims)
    }

    /// Builds the standard claims, merges the rules' claims under them and signs both tokens.
    pub fn sign(&self, req: &TokenRequest, rc: &RuleClaims) -> Result<Issued, IssueError> {
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
        let lifetime = req.access_token_lifetime;
        let jti = crate::crypto::random_token(16);

        let mut at: Map<String, Value> = rc.access_token.clone();
        let (issuer, userinfo) = (&self.inner.issuer, &self.inner.userinfo);
        // RFC 9068 §3: an access token always has an audience; without an API it is the userinfo
        // endpoint, or the client itself when the issuer serves no userinfo.
        let aud = match (&req.audience, openid && self.inner.userinfo_audience) {
            (Some(api), true) => json!([api, userinfo]),
            (Some(api), false) => json!(api),
            (None, _) if self.inner.userinfo_audience => json!(userinfo),
            (None, _) => json!(req.client_id),
        };
        for (k, v) in [
            ("iss", json!(issuer)),
            ("sub", sub.clone()),
            ("aud", aud),
            ("iat", json!(now)),
            ("exp", json!(now + lifetime as i64)),
            ("azp", json!(req.client_id)),
            ("client_id", json!(req.client_id)),
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
                ("iss", json!(issuer)),
                ("sub", sub),
                ("aud", json!(req.client_id)),
                ("iat", json!(now)),
                ("exp", json!(now + req.id_token_lifetime as i64)),
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
            client_id = %req.client_id,
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

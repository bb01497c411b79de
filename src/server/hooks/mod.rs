//! Token-hook endpoints that let other token servers run claimrules' rules over HTTP, speaking
//! the formats they already call: Ory Hydra's `oauth2.token_hook` (`POST /hooks/hydra/token`)
//! and Okta's token inline hook (`POST /hooks/okta/token`). Both run the current rule set of a
//! [`HotRules`] (so hot reload applies to them too) and answer in the caller's own format.
//!
//! Also [`status_router`]: `GET /rules/status`, the hot-reload state for operators.
//!
//! Common behaviour: the caller is authenticated by a shared secret compared in constant time
//! (a hook with no secret configured answers 404 unless
//! [`HooksConfig::allow_unauthenticated_loopback`] is set and the request provably comes from
//! this machine, see there); the body must be `application/json` (415 otherwise, so a browser
//! cannot send one cross-site without a CORS preflight, which is never answered); bodies over
//! [`MAX_BODY_BYTES`] get 413; malformed JSON gets 400 with the parser's message. Rules run on a
//! blocking thread with the rule set's own time budget.
//!
//! ```
//! use claimrules::server::hooks::{self, HooksConfig};
//! use claimrules::rules::RuleSet;
//! use claimrules::HotRules;
//!
//! let rules = HotRules::fixed(RuleSet::from_sources(vec![], serde_json::json!({}), Default::default()).unwrap());
//! let cfg = HooksConfig {
//!     hydra_api_key: Some("Bearer hydra-secret".into()),
//!     okta_authorization: Some("okta-secret".into()),
//!     ..HooksConfig::default()
//! };
//! let app: axum::Router = hooks::router(rules.clone(), cfg)
//!     .merge(hooks::status_router(rules, Some("admin-secret".into())));
//! # drop(app);
//! ```

pub mod hydra;
pub mod okta;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::claims::{check_claim, TokenKind};
use crate::rules::HotRules;
use crate::rules::{Outcome, RuleError};

pub use status::status_router;

/// Largest request body a hook accepts (1 MiB); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The header Hydra's `api_key` auth sends by default in our documentation.
pub const DEFAULT_HYDRA_HEADER: &str = "Authorization";

/// How the hook endpoints authenticate their callers.
#[derive(Clone)]
pub struct HooksConfig {
    /// The exact header value Hydra sends (`oauth2.token_hook.auth.config.value`, e.g.
    /// `"Bearer s3cret"`). `None` disables the Hydra hook (see `allow_unauthenticated_loopback`).
    pub hydra_api_key: Option<String>,
    /// The header Hydra sends it in (`oauth2.token_hook.auth.config.name`, with `in: header`);
    /// defaults to [`DEFAULT_HYDRA_HEADER`].
    pub hydra_header: String,
    /// The exact `Authorization` header value Okta sends (the inline hook's
    /// `channel.config.authScheme.value`). `None` disables the Okta hook (see below).
    pub okta_authorization: Option<String>,
    /// Serve a hook that has no secret configured without authentication (the config's
    /// `[hooks] insecure_loopback = true`), to callers on this machine only: the peer address
    /// must be known and on loopback, the `Host` header must name a loopback address or
    /// `localhost` (a DNS-rebinding page sends its own name; a reverse proxy on this host
    /// forwards the public one), and the request must carry no `Forwarded` / `X-Forwarded-*`
    /// header (it came through a proxy). Anything else gets 404, as if the hook did not exist.
    pub allow_unauthenticated_loopback: bool,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            hydra_api_key: None,
            hydra_header: DEFAULT_HYDRA_HEADER.to_owned(),
            okta_authorization: None,
            allow_unauthenticated_loopback: false,
        }
    }
}

impl std::fmt::Debug for HooksConfig {
    // Never print the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<String>| if s.is_some() { "<set>" } else { "<none>" };
        f.debug_struct("HooksConfig")
            .field("hydra_api_key", &set(&self.hydra_api_key))
            .field("hydra_header", &self.hydra_header)
            .field("okta_authorization", &set(&self.okta_authorization))
            .field(
                "allow_unauthenticated_loopback",
                &self.allow_unauthenticated_loopback,
            )
            .finish()
    }
}

/// Why a hook request was refused before the rules ran, or why they could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The credential header is missing or wrong.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// The hook has no credential configured (and unauthenticated loopback use is off).
    #[error("this hook is not enabled")]
    Disabled,
    /// The body is not declared `application/json`.
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    /// The body could not be read.
    #[error("cannot read the request body: {0}")]
    Body(String),
    /// The body is not JSON of the expected shape.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// The rule run could not be scheduled or panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for HookError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            HookError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            HookError::Disabled => (StatusCode::NOT_FOUND, "not_found"),
            HookError::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            HookError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request")
            }
            HookError::Body(_) | HookError::Malformed(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            HookError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        };
        let description = match &self {
            // Internals stay in the log.
            HookError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        (
            status,
            Json(json!({"error": code, "error_description": description})),
        )
            .into_response()
    }
}

#[derive(Clone)]
struct HookState {
    rules: HotRules,
    cfg: Arc<HooksConfig>,
    hydra_header: Option<HeaderName>,
}

impl HookState {
    /// The reserved namespace hosts of the current rule set's namespace policy, which both
    /// hooks' mappings need to tell namespaced claims apart.
    fn reserved_hosts(&self) -> Vec<String> {
        let rules = self.rules.current();
        rules.set.options().namespace.reserved_hosts.clone()
    }
}

/// The hook endpoints: `POST /hooks/hydra/token` and `POST /hooks/okta/token`, running the
/// current rule set of `rules`. Merge it into the server's router.
pub fn router(rules: HotRules, cfg: HooksConfig) -> Router {
    let hydra_header = HeaderName::from_bytes(cfg.hydra_header.as_bytes()).ok();
    if hydra_header.is_none() {
        tracing::error!(header = %cfg.hydra_header, "invalid hydra_header name; the Hydra hook refuses every request");
    }
    let state = HookState {
        rules,
        cfg: Arc::new(cfg),
        hydra_header,
    };
    Router::new()
        .route("/hooks/hydra/token", post(hydra::handle))
        .route("/hooks/okta/token", post(okta::handle))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn peer(req: &Request) -> Option<SocketAddr> {
    super::extract::ClientIp::from_extensions(req.extensions()).addr()
}

/// Checks the caller's credential in `header` against `expected`.
fn authenticate(
    headers: &HeaderMap,
    header: Option<&HeaderName>,
    expected: Option<&str>,
    allow_loopback: bool,
    peer: Option<SocketAddr>,
) -> Result<(), HookError> {
    match expected {
        Some(secret) => {
            let given = header.and_then(|h| headers.get(h));
            match given {
                Some(v) if crate::crypto::secret_eq(v.as_bytes(), secret.as_bytes()) => Ok(()),
                _ => Err(HookError::Unauthorized),
            }
        }
        None if allow_loopback && from_this_machine(headers, peer) => Ok(()),
        None => Err(HookError::Disabled),
    }
}

/// Whether an unauthenticated request provably comes from a process on this machine (see
/// [`HooksConfig::allow_unauthenticated_loopback`]).
fn from_this_machine(headers: &HeaderMap, peer: Option<SocketAddr>) -> bool {
    let proxied = headers.contains_key("forwarded")
        || headers
            .keys()
            .any(|k| k.as_str().starts_with("x-forwarded-") || k.as_str() == "x-real-ip");
    peer.is_some_and(|p| p.ip().is_loopback()) && !proxied && super::loopback_host(headers)
}

/// Whether the request declares a JSON body (`application/json`, or a `+json` type, with any
/// parameters), as RFC 8259 §11 registers it.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| {
            t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
        })
}

/// Authenticates, reads the body (bounded) and parses it.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request,
    header: Option<&HeaderName>,
    expected: Option<&str>,
    allow_loopback: bool,
) -> Result<T, HookError> {
    let peer = peer(&req);
    authenticate(req.headers(), header, expected, allow_loopback, peer)?;
    if !is_json(req.headers()) {
        return Err(HookError::UnsupportedMediaType);
    }
    // The DefaultBodyLimit layer of `router` bounds this read; its rejection says 413.
    let bytes = Bytes::from_request(req, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HookError::BodyTooLarge
        } else {
            HookError::Body(e.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| HookError::Malformed(e.to_string()))
}

/// Runs the serving rule set (inline or on the blocking pool, see [`crate::server::cpu`]);
/// returns the version used and the result.
async fn run_rules(
    rules: &HotRules,
    user: Value,
    context: Value,
) -> Result<(u64, Result<Outcome, RuleError>), HookError> {
    let loaded = rules.current();
    let version = loaded.version;
    let may_wait = loaded.set.may_call_out();
    let result = crate::server::cpu::CpuLane::shared()
        .run(may_wait, move || loaded.set.run(user, context))
        .await
        .map_err(|e| HookError::Internal(e.to_string()))?;
    Ok((version, result))
}

/// Logs a failed run the way the token server does: denials at info, script errors with rule,
/// line and column at error level.
fn log_rule_error(hook: &str, version: u64, err: &RuleError) {
    if err.is_denial() {
        tracing::info!(hook, rules_version = version, error = %err, "rules denied the token");
    } else {
        tracing::error!(hook, rules_version = version, error = %err, "rules failed; refusing the token");
    }
}

/// Token-request fields that are credentials and never reach rules.
const SECRET_FIELDS: &[&str] = &[
    "client_secret",
    "refresh_token",
    "code",
    "code_verifier",
    "assertion",
    "client_assertion",
    "password",
];

/// Drops credential fields from a request's parameters.
fn without_secrets(mut params: Map<String, Value>) -> Map<String, Value> {
    for f in SECRET_FIELDS {
        params.remove(*f);
    }
    params
}

/// The part of an existing token's claims the rules may see and change: the claims a rule
/// could set itself (namespaced, or OIDC profile claims on the ID token). The rest is carried
/// over untouched.
fn split_claims(
    kind: TokenKind,
    claims: &Map<String, Value>,
    reserved: &[String],
) -> (Map<String, Value>, Map<String, Value>) {
    let mut editable = Map::new();
    let mut fixed = Map::new();
    for (k, v) in claims {
        if v.is_null() {
            continue;
        }
        if check_claim(kind, k, reserved).is_ok() {
            editable.insert(k.clone(), v.clone());
        } else {
            fixed.insert(k.clone(), v.clone());
        }
    }
    (editable, fixed)
}

fn warn_scope_ignored(hook: &str, version: u64, scope: &Option<Vec<String>>) {
    if let Some(scope) = scope {
        tracing::warn!(
            hook,
            rules_version = version,
            scope = %scope.join(" "),
            "the rules rewrote the access token's scope, which this hook cannot change; ignored"
        );
    }
}

fn warn_dropped(hook: &str, version: u64, out: &Outcome) {
    for w in &out.warnings {
        tracing::warn!(hook, rules_version = version, "{w}");
    }
}

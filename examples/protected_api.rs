//! A protected API (the seed's step 4): answers `GET /api` only for a valid Bearer access token
//! that carries the required scope, verified with `claimrules::issuer::verify` against the
//! issuer's JWKS.
//!
//! ```text
//! cargo run --example protected_api -- --issuer http://127.0.0.1:3000/ \
//!     --audience https://api.example.com --scope read:contacts --addr 127.0.0.1:5000
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:5000/api
//! ```
//!
//! Every flag can also come from the environment: `ISSUER`, `AUDIENCE`, `REQUIRED_SCOPE`,
//! `API_ADDR`. Refusals follow RFC 6750 §3: no credentials → 401 with a bare `Bearer` challenge,
//! a malformed `Authorization` header → 400 `invalid_request`, a bad token → 401
//! `invalid_token`, a missing scope → 403 `insufficient_scope`; each with `WWW-Authenticate`.
//!
//! The JWKS is found through the issuer's discovery document, fetched on first use, cached,
//! and fetched again (at most every [`JWKS_MIN_REFETCH`]) when a token names an unknown `kid`,
//! so a key roll-over on the issuer needs no restart here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use claimrules::issuer::verify::{verify, VerifyError, VerifyOptions};
use clap::Parser;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

/// Realm named in every challenge.
const REALM: &str = "claimrules-example-api";
/// Shortest interval between two JWKS fetches triggered by unknown `kid`s (protects the issuer
/// from being hammered with tokens carrying made-up key ids).
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);
/// Timeout of the calls to the issuer.
const ISSUER_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of this example.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    /// A flag or environment variable is invalid.
    #[error("invalid setting: {0}")]
    Settings(String),
    /// The issuer's discovery document or JWKS could not be fetched.
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    /// The listener failed.
    #[error("server: {0}")]
    Server(String),
}

/// Command-line flags; each falls back to an environment variable, then to the demo default.
#[derive(Debug, Parser)]
#[command(about = "An API that accepts only valid claimrules access tokens with a scope")]
struct Args {
    /// Issuer URL (`iss`); env ISSUER; default http://127.0.0.1:3000/.
    #[arg(long)]
    issuer: Option<String>,
    /// This API's identifier (`aud`); env AUDIENCE; default https://api.example.com.
    #[arg(long)]
    audience: Option<String>,
    /// Scope a token must carry; env REQUIRED_SCOPE; default read:contacts.
    #[arg(long)]
    scope: Option<String>,
    /// Listen address; env API_ADDR; default 127.0.0.1:5000.
    #[arg(long)]
    addr: Option<String>,
}

fn setting(flag: Option<String>, env: &str, default: &str) -> String {
    flag.or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

/// The API's settings.
#[derive(Debug, Clone)]
struct Settings {
    issuer: String,
    audience: String,
    scope: String,
    addr: SocketAddr,
}

impl Settings {
    fn from_args(args: Args) -> Result<Settings, ApiError> {
        let issuer = setting(args.issuer, "ISSUER", "http://127.0.0.1:3000/");
        url::Url::parse(&issuer)
            .map_err(|e| ApiError::Settings(format!("issuer {issuer:?}: {e}")))?;
        let addr = setting(args.addr, "API_ADDR", "127.0.0.1:5000");
        let addr = addr
            .parse()
            .map_err(|e| ApiError::Settings(format!("addr {addr:?}: {e}")))?;
        let scope = setting(args.scope, "REQUIRED_SCOPE", "read:contacts");
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            return Err(ApiError::Settings(format!(
                "scope {scope:?} must be one scope token"
            )));
        }
        Ok(Settings {
            issuer,
            audience: setting(args.audience, "AUDIENCE", "https://api.example.com"),
            scope,
            addr,
        })
    }
}

/// The issuer's keys as last fetched.
#[derive(Default)]
struct JwksCache {
    jwks: Option<Value>,
    fetched: Option<Instant>,
}

struct AppState {
    settings: Settings,
    http: reqwest::Client,
    cache: Mutex<JwksCache>,
}

impl AppState {
    async fn get_json(&self, url: &str) -> Result<Value, ApiError> {
        let fetch = |message: String| ApiError::Fetch {
            url: url.to_owned(),
            message,
        };
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fetch(e.to_string()))?;
        if !res.status().is_success() {
            return Err(fetch(format!("HTTP {}", res.status())));
        }
        res.json().await.map_err(|e| fetch(e.to_string()))
    }

    /// Discovery → `jwks_uri` → the key set.
    async fn fetch_jwks(&self) -> Result<Value, ApiError> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let discovery = self.get_json(&discovery_url).await?;
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::Fetch {
                url: discovery_url.clone(),
                message: "no jwks_uri in the discovery document".into(),
            })?;
        self.get_json(jwks_uri).await
    }

    /// The cached JWKS; fetched when missing, or when `refresh` and the last fetch is old enough.
    async fn jwks(&self, refresh: bool) -> Result<Value, ApiError> {
        let mut cache = self.cache.lock().await;
        let stale = match cache.fetched {
            Some(t) => t.elapsed() >= JWKS_MIN_REFETCH,
            None => true,
        };
        if let Some(jwks) = &cache.jwks {
            if !refresh || !stale {
                return Ok(jwks.clone());
            }
        }
        let jwks = self.fetch_jwks().await?;
        cache.jwks = Some(jwks.clone());
        cache.fetched = Some(Instant::now());
        Ok(jwks)
    }

    fn options(&self) -> VerifyOptions {
        VerifyOptions::new(&self.settings.issuer, &self.settings.audience)
            .require_scope(&self.settings.scope)
    }

    /// Verifies a token, fetching the keys again once when it names a `kid` not yet known.
    async fn check(
        &self,
        token: &str,
    ) -> Result<Result<Map<String, Value>, VerifyError>, ApiError> {
        let opts = self.options();
        let first = verify(token, &self.jwks(false).await?, &opts);
        if matches!(first, Err(VerifyError::UnknownKey(_))) {
            return Ok(verify(token, &self.jwks(true).await?, &opts));
        }
        Ok(first)
    }
}

/// A refusal with its RFC 6750 challenge.
fn challenge(
    status: StatusCode,
    error: Option<&str>,
    description: &str,
    scope: Option<&str>,
) -> Response {
    let mut value = format!("Bearer realm=\"{REALM}\"");
    if let Some(e) = error {
        value.push_str(&format!(
            ", error=\"{e}\", error_description=\"{description}\""
        ));
    }
    if let Some(s) = scope {
        value.push_str(&format!(", scope=\"{s}\""));
    }
    let body = match error {
        Some(e) => json!({"error": e, "error_description": description}),
        None => json!({"error_description": description}),
    };
    let mut res = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// `GET /api`.
async fn api(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(raw) = headers.get(header::AUTHORIZATION) else {
        return challenge(
            StatusCode::UNAUTHORIZED,
            None,
            "a Bearer access token is required",
            None,
        );
    };
    // RFC 6750 §2.1: the scheme is case-insensitive; exactly one token follows it.
    let token = raw.to_str().ok().and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        let rest = rest.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() && !rest.contains(' '))
            .then_some(rest)
    });
    let Some(token) = token else {
        return challenge(
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
            "the Authorization header must be `Bearer <token>`",
            None,
        );
    };
    let claims = match state.check(token).await {
        Ok(Ok(claims)) => claims,
        Ok(Err(e)) if e.is_insufficient_scope() => {
            return challenge(
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                "the access token lacks the required scope",
                Some(&state.settings.scope),
            )
        }
        Ok(Err(e)) => {
            // The reason is logged for the operator; the caller learns only that it failed.
            tracing::info!(reason = %e, "access token refused");
            return challenge(
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                "the access token is not valid",
                None,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot get the issuer's keys");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "temporarily_unavailable",
                    "error_description": "the issuer's keys cannot be fetched"})),
            )
                .into_response();
        }
    };
    // Show what the rules added: the namespaced (URL-keyed) custom claims.
    let custom: Map<String, Value> = claims
        .iter()
        .filter(|(k, _)| k.starts_with("http://") || k.starts_with("https://"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Json(json!({
        "message": format!("hello {}, you may use {}", claims.get("sub").and_then(Value::as_str).unwrap_or("?"), state.settings.audience),
        "sub": claims.get("sub"),
        "scope": claims.get("scope"),
        "client": claims.get("azp").or_else(|| claims.get("client_id")),
        "custom_claims": custom,
    }))
    .into_response()
}

fn router(state: Arc<AppState>) -> Router {
    Router::new().route("/api", get(api)).with_state(state)
}

async fn run(settings: Settings) -> Result<(), ApiError> {
    let http = reqwest::Client::builder()
        .timeout(ISSUER_TIMEOUT)
        .build()
        .map_err(|e| ApiError::Server(e.to_string()))?;
    let addr = settings.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ApiError::Server(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| ApiError::Server(e.to_string()))?;
    println!("protected API listening on http://{local}/api");
    println!("  issuer:   {}", settings.issuer);
    println!("  audience: {}", settings.audience);
    println!("  scope:    {}", settings.scope);
    let state = Arc::new(AppState {
        settings,
        http,
        cache: Mutex::new(JwksCache::default()),
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| ApiError::Server(e.to_string()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let settings = match Settings::from_args(Args::parse()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! The seed's regular web app, end to end: `/` shows a login link; `/login` sends the browser to
//! the issuer's `/authorize` (with `state`, `nonce` and PKCE); `/callback` checks `state`,
//! exchanges the code with the client secret at `/oauth/token`, checks the ID token, calls the
//! protected API (`examples/protected_api.rs`) with the access token and shows its answer.
//!
//! ```text
//! cargo run --release -- serve            # prints client_id, client_secret, ...
//! cargo run --example protected_api
//! CLIENT_SECRET=... cargo run --example webapp
//! # open http://127.0.0.1:4000/
//! ```
//!
//! Flags (or environment variables): `--issuer` (ISSUER, default http://127.0.0.1:3000/),
//! `--client-id` (CLIENT_ID, default demo-app), `--client-secret` (CLIENT_SECRET, required),
//! `--audience` (AUDIENCE, default https://api.example.com), `--scope` (SCOPE, default
//! `openid profile email read:contacts`), `--api-url` (API_URL, default
//! http://127.0.0.1:5000/api), `--addr` (WEBAPP_ADDR, default 127.0.0.1:4000) and
//! `--redirect-uri` (REDIRECT_URI, default `http://<addr>/callback`).
//!
//! The login's `state` is random, bound to the browser by an `HttpOnly` cookie and kept, with
//! the nonce and the PKCE verifier, in memory for ten minutes; each state is usable once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use claimrules::issuer::verify::{verify, VerifyOptions};
use clap::Parser;
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// Cookie binding a pending login's `state` to the browser that started it.
const STATE_COOKIE: &str = "webapp_login_state";
/// How long a started login may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Timeout of the calls to the issuer and the API.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of this example.
#[derive(Debug, thiserror::Error)]
enum WebAppError {
    /// A flag or environment variable is missing or invalid.
    #[error("invalid setting: {0}")]
    Settings(String),
    /// A call to the issuer failed.
    #[error("{0}")]
    Issuer(String),
    /// The listener failed.
    #[error("server: {0}")]
    Server(String),
}

/// Command-line flags; each falls back to an environment variable, then to the demo default.
/// (No `Debug`: it would print the client secret.)
#[derive(Parser)]
#[command(about = "A regular web app that logs users in with claimrules and calls an API")]
struct Args {
    /// Issuer URL; env ISSUER.
    #[arg(long)]
    issuer: Option<String>,
    /// Client id; env CLIENT_ID.
    #[arg(long)]
    client_id: Option<String>,
    /// Client secret; env CLIENT_SECRET (prefer the environment: flags show in `ps`).
    #[arg(long)]
    client_secret: Option<String>,
    /// API identifier (`audience`); env AUDIENCE.
    #[arg(long)]
    audience: Option<String>,
    /// Requested scopes, space separated; env SCOPE.
    #[arg(long)]
    scope: Option<String>,
    /// URL of the protected API; env API_URL.
    #[arg(long)]
    api_url: Option<String>,
    /// Listen address; env WEBAPP_ADDR.
    #[arg(long)]
    addr: Option<String>,
    /// Redirect URI registered for the client; env REDIRECT_URI.
    #[arg(long)]
    redirect_uri: Option<String>,
}

fn setting(flag: Option<String>, env: &str) -> Option<String> {
    flag.or_else(|| std::env::var(env).ok())
        .filter(|v| !v.is_empty())
}

/// The app's settings (no `Debug`: it holds the client secret).
#[derive(Clone)]
struct Settings {
    issuer: String,
    client_id: String,
    client_secret: String,
    audience: String,
    scope: String,
    api_url: String,
    addr: SocketAddr,
    redirect_uri: String,
}

impl Settings {
    fn from_args(args: Args) -> Result<Settings, WebAppError> {
        let bad =
            |what: &str, v: &str, e: String| WebAppError::Settings(format!("{what} {v:?}: {e}"));
        let issuer =
            setting(args.issuer, "ISSUER").unwrap_or_else(|| "http://127.0.0.1:3000/".into());
        url::Url::parse(&issuer).map_err(|e| bad("issuer", &issuer, e.to_string()))?;
        let addr_text =
            setting(args.addr, "WEBAPP_ADDR").unwrap_or_else(|| "127.0.0.1:4000".into());
        let addr: SocketAddr = addr_text
            .parse()
            .map_err(|e: std::net::AddrParseError| bad("addr", &addr_text, e.to_string()))?;
        let client_secret = setting(args.client_secret, "CLIENT_SECRET").ok_or_else(|| {
            WebAppError::Settings(
                "the client secret is required (--client-secret or CLIENT_SECRET; `claimrules serve` prints it)"
                    .into(),
            )
        })?;
        let api_url =
            setting(args.api_url, "API_URL").unwrap_or_else(|| "http://127.0.0.1:5000/api".into());
        url::Url::parse(&api_url).map_err(|e| bad("api-url", &api_url, e.to_string()))?;
        Ok(Settings {
            issuer,
            client_id: setting(args.client_id, "CLIENT_ID").unwrap_or_else(|| "demo-app".into()),
            client_secret,
            audience: setting(args.audience, "AUDIENCE")
                .unwrap_or_else(|| "https://api.example.com".into()),
            scope: setting(args.scope, "SCOPE")
                .unwrap_or_else(|| "openid profile email read:contacts".into()),
            api_url,
            redirect_uri: setting(args.redirect_uri, "REDIRECT_URI")
                .unwrap_or_else(|| format!("http://{addr}/callback")),
            addr,
        })
    }
}

/// What `/callback` needs to finish a login started by `/login`.
struct PendingLogin {
    nonce: String,
    verifier: String,
    started: Instant,
}

/// The issuer's endpoints, from its discovery document.
#[derive(Clone)]
struct Endpoints {
    authorization: String,
    token: String,
    jwks: String,
}

struct AppState {
    settings: Settings,
    http: reqwest::Client,
    pending: Mutex<HashMap<String, PendingLogin>>,
    endpoints: Mutex<Option<Endpoints>>,
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// HTML-escapes text for element content and attributes.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;color:#1d2330}}\
pre{{background:#f0f1f4;padding:1rem;border-radius:6px;overflow:auto}}a.button{{display:inline-block;\
padding:.6rem 1.2rem;background:#3056d3;color:#fff;border-radius:6px;text-decoration:none}}</style>\
</head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    let mut res = (status, Html(html)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn error_page(status: StatusCode, what: &str, detail: &str) -> Response {
    page(
        status,
        "Login failed",
        &format!(
            "<p id=\"error\"><strong>{}</strong></p><p id=\"error-description\">{}</p>\
<p><a href=\"/\">Start again</a></p>",
            escape(what),
            escape(detail)
        ),
    )
}

impl AppState {
    async fn get_json(&self, url: &str) -> Result<Value, WebAppError> {
        let fail = |m: String| WebAppError::Issuer(format!("GET {url}: {m}"));
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !res.status().is_success() {
            return Err(fail(format!("HTTP {}", res.status())));
        }
        res.json().await.map_err(|e| fail(e.to_string()))
    }

    /// The issuer's endpoints, discovered once.
    async fn endpoints(&self) -> Result<Endpoints, WebAppError> {
        let mut cached = self.endpoints.lock().await;
        if let Some(e) = cached.as_ref() {
            return Ok(e.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&url).await?;
        let field = |k: &str| {
            doc.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| WebAppError::Issuer(format!("{url}: no {k}")))
        };
        if field("issuer")? != self.settings.issuer {
            return Err(WebAppError::Issuer(format!(
                "{url}: the issuer is {:?}, expected {:?}",
                field("issuer")?,
                self.settings.issuer
            )));
        }
        let e = Endpoints {
            authorization: field("authorization_endpoint")?,
            token: field("token_endpoint")?,
            jwks: field("jwks_uri")?,
        };
        *cached = Some(e.clone());
        Ok(e)
    }
}

/// `GET /`.
async fn home() -> Response {
    page(
        StatusCode::OK,
        "Demo web app",
        "<p>This app logs you in with claimrules, then calls the protected API for you.</p>\
<p><a id=\"login\" class=\"button\" href=\"/login\">Log in</a></p>",
    )
}

/// `GET /login`: starts a login and redirects to the issuer's `/authorize`.
async fn login(State(app): State<Arc<AppState>>) -> Response {
    let endpoints = match app.endpoints().await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "discovery failed");
            return error_page(
                StatusCode::BAD_GATEWAY,
                "The login server cannot be reached",
                "",
            );
        }
    };
    let state = random_b64(24);
    let nonce = random_b64(24);
    let verifier = random_b64(32);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    {
        let mut pending = app.pending.lock().await;
        pending.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
        pending.insert(
            state.clone(),
            PendingLogin {
                nonce: nonce.clone(),
                verifier,
                started: Instant::now(),
            },
        );
    }
    let s = &app.settings;
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", s.client_id.as_str()),
        ("redirect_uri", s.redirect_uri.as_str()),
        ("scope", s.scope.as_str()),
        ("audience", s.audience.as_str()),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ])
    .unwrap_or_default();
    let sep = if endpoints.authorization.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut res = Redirect::to(&format!("{}{sep}{query}", endpoints.authorization)).into_response();
    let cookie = format!(
        "{STATE_COOKIE}={state}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        LOGIN_TTL.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The token response fields this app uses.
#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    id_token: Option<String>,
    scope: Option<String>,
}

/// `GET /callback`.
async fn callback(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = &app.settings;
    // State first: an answer that does not belong to a login this browser started is refused
    // before anything else in it is looked at (RFC 6749 §10.12).
    let Some(state) = q.get("state").filter(|st| !st.is_empty()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the callback has no state",
        );
    };
    let bound = cookie(&headers, STATE_COOKIE)
        .is_some_and(|c| subtle::ConstantTimeEq::ct_eq(c.as_bytes(), state.as_bytes()).into());
    // Only the browser holding the cookie may use (and so consume) a pending state.
    let pending = if bound {
        app.pending.lock().await.remove(state.as_str())
    } else {
        None
    };
    let Some(pending) = pending.filter(|p| p.started.elapsed() < LOGIN_TTL) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "this login was not started here, has expired or was already used",
        );
    };
    // RFC 9207: when the issuer names itself, it must be the one we sent the user to.
    if let Some(iss) = q.get("iss") {
        if iss != &s.issuer {
            return error_page(
                StatusCode::BAD_REQUEST,
                "invalid_issuer",
                "the response comes from another issuer",
            );
        }
    }
    if let Some(error) = q.get("error") {
        let desc = q.get("error_description").map(String::as_str).unwrap_or("");
        return error_page(StatusCode::FORBIDDEN, error, desc);
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the callback has no code",
        );
    };
    let endpoints = match app.endpoints().await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "discovery failed");
            return error_page(
                StatusCode::BAD_GATEWAY,
                "The login server cannot be reached",
                "",
            );
        }
    };
    // The code exchange: client_secret_basic, the same redirect_uri, the PKCE verifier.
    let res = app
        .http
        .post(&endpoints.token)
        .basic_auth(
            form_encode(&s.client_id),
            Some(form_encode(&s.client_secret)),
        )
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", s.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ])
        .send()
        .await;
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "token request failed");
            return error_page(
                StatusCode::BAD_GATEWAY,
                "The login server cannot be reached",
                "",
            );
        }
    };
    if !res.status().is_success() {
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let err = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("token_error");
        let desc = body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        tracing::warn!(%status, error = err, "code exchange refused");
        return error_page(StatusCode::BAD_GATEWAY, err, desc);
    }
    let tokens: TokenResponse = match res.json().await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "malformed token response");
            return error_page(StatusCode::BAD_GATEWAY, "invalid_token_response", "");
        }
    };
    // The ID token tells who logged in: verify it (signature, iss, aud = our client id) and
    // check that it answers this login (nonce).
    let mut who = String::from("(no ID token: the openid scope was not requested)");
    let mut id_claims = Value::Null;
    if let Some(id_token) = &tokens.id_token {
        let jwks = match app.get_json(&endpoints.jwks).await {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "JWKS fetch failed");
                return error_page(
                    StatusCode::BAD_GATEWAY,
                    "The login server cannot be reached",
                    "",
                );
            }
        };
        let claims = match verify(
            id_token,
            &jwks,
            &VerifyOptions::new(&s.issuer, &s.client_id),
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(reason = %e, "ID token refused");
                return error_page(StatusCode::BAD_GATEWAY, "invalid_id_token", &e.to_string());
            }
        };
        if claims.get("nonce").and_then(Value::as_str) != Some(pending.nonce.as_str()) {
            return error_page(
                StatusCode::BAD_GATEWAY,
                "invalid_id_token",
                "the ID token's nonce does not match",
            );
        }
        let pick = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
        who = pick("name")
            .or_else(|| pick("email"))
            .or_else(|| pick("sub"))
            .unwrap_or_default();
        id_claims = Value::Object(claims);
    }
    // The seed's step 3: call the API with the access token.
    let (api_status, api_body) = match app
        .http
        .get(&s.api_url)
        .bearer_auth(&tokens.access_token)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            let body = serde_json::from_str::<Value>(&text)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(text);
            (status.as_u16().to_string(), body)
        }
        Err(e) => {
            tracing::error!(error = %e, "API call failed");
            ("unreachable".to_owned(), String::new())
        }
    };
    let id_pretty = serde_json::to_string_pretty(&id_claims).unwrap_or_default();
    let mut res = page(
        StatusCode::OK,
        "Logged in",
        &format!(
            "<p>Logged in as <strong id=\"user\">{who}</strong>; granted scope <code id=\"scope\">{scope}</code>.</p>\
<h2>The protected API answered <span id=\"api-status\">{api_status}</span></h2><pre id=\"api-response\">{api_body}</pre>\
<h2>ID token claims</h2><pre id=\"id-token\">{id_pretty}</pre><p><a href=\"/\">Home</a></p>",
            who = escape(&who),
            scope = escape(tokens.scope.as_deref().unwrap_or(&s.scope)),
            api_status = escape(&api_status),
            api_body = escape(&api_body),
            id_pretty = escape(&id_pretty),
        ),
    );
    // The login is finished: forget its state cookie.
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{STATE_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
    )) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn run(settings: Settings) -> Result<(), WebAppError> {
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| WebAppError::Server(e.to_string()))?;
    let addr = settings.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| WebAppError::Server(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| WebAppError::Server(e.to_string()))?;
    println!("web app listening on http://{local}/");
    println!("  issuer:       {}", settings.issuer);
    println!("  client_id:    {}", settings.client_id);
    println!("  redirect_uri: {}", settings.redirect_uri);
    println!("  api_url:      {}", settings.api_url);
    let state = Arc::new(AppState {
        settings,
        http,
        pending: Mutex::new(HashMap::new()),
        endpoints: Mutex::new(None),
    });
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| WebAppError::Server(e.to_string()))
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

//! An axum token server of its own that uses claimrules for the rules and the tokens: its own
//! users and clients, the repository's sample rules (`rules/`, hot reloaded), the password and
//! refresh token grants at `POST /oauth/token`, its JWKS at `/.well-known/jwks.json`.
//!
//! It builds against claimrules with `default-features = false` (no server stack, store or
//! command line of claimrules): `cargo run --no-default-features --example embed_axum`.
//!
//! ```text
//! cargo run --example embed_axum                            # prints its address and demo logins
//! curl -s http://127.0.0.1:4200/oauth/token -d grant_type=password -d client_id=demo-cli \
//!      -d username=eddie -d password=eddie-password \
//!      -d audience=https://api.example.com -d 'scope=openid read:contacts write:contacts'
//! ```
//!
//! The editor `eddie` asks for `write:contacts` and gets `openid read:contacts`: the sample rule
//! `20-scope-by-role` reads the requested scope from `context.request.body.scope`, where
//! claimrules puts it for a token-endpoint grant. `eve`'s email is unverified, so
//! `30-require-verified-email` denies her at the client `demo-app` (`invalid_grant` with the
//! rule's message). `--addr` (default 127.0.0.1:4200; port 0 picks one) and `--rules DIR`
//! (default `rules`). Users, clients and refresh tokens live in memory, passwords in clear and
//! the signing key is generated at start: a real server keeps hashes and its key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use claimrules::{
    Endpoint, HotRules, IssueError, Issued, Issuer, Protocol, RuleSetOptions, SetupError,
    SigningAlg, SigningKey, TokenRequest, User,
};

/// The API this server issues access tokens for.
const AUDIENCE: &str = "https://api.example.com";
/// The scopes a client may ask for.
const SCOPES: [&str; 6] = [
    "openid",
    "profile",
    "email",
    "offline_access",
    "read:contacts",
    "write:contacts",
];

#[derive(Debug, Parser)]
#[command(about = "An axum token server that uses claimrules for its rules and tokens")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:4200")]
    addr: SocketAddr,
    /// The rules folder, hot reloaded.
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
}

/// A client of this server's own registry.
struct Client {
    name: &'static str,
    /// `None` for a public client.
    secret: Option<&'static str>,
    metadata: Value,
}

/// An account of this server's own user store.
struct Account {
    password: &'static str,
    user: User,
}

/// What a refresh token stands for.
#[derive(Clone)]
struct RefreshGrant {
    client_id: String,
    username: String,
    scopes: Vec<String>,
    /// The access token's scope the rules left at login.
    rule_scope: Vec<String>,
}

/// Everything the handlers share; the issuer is cheap to clone into a blocking task.
struct App {
    issuer: Issuer,
    clients: HashMap<&'static str, Client>,
    users: HashMap<&'static str, Account>,
    refresh: Mutex<HashMap<String, RefreshGrant>>,
}

fn clients() -> HashMap<&'static str, Client> {
    HashMap::from([
        (
            "demo-app",
            Client {
                name: "Demo web app",
                secret: Some("demo-app-secret"),
                metadata: json!({"tier": "gold"}),
            },
        ),
        (
            "demo-cli",
            Client {
                name: "Demo command line",
                secret: None,
                metadata: json!({}),
            },
        ),
    ])
}

fn users() -> HashMap<&'static str, Account> {
    let account = |password, user| Account { password, user };
    HashMap::from([
        (
            "ada",
            account(
                "ada-password",
                User::new("local|ada")
                    .email("ada@example.com")
                    .email_verified(true)
                    .app_metadata(json!({"roles": ["admin"], "plan": "pro"}))
                    .user_metadata(json!({"theme": "dark"})),
            ),
        ),
        (
            "eddie",
            account(
                "eddie-password",
                User::new("local|eddie")
                    .email("eddie@example.com")
                    .email_verified(true)
                    .app_metadata(json!({"roles": ["editor"], "plan": "free"})),
            ),
        ),
        (
            "eve",
            account(
                "eve-password",
                User::new("local|eve").email("eve@example.com"),
            ),
        ),
    ])
}

/// The token request's form fields (RFC 6749 §4.3.2, §6).
#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    refresh_token: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    audience: Option<String>,
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, Json(body)).into_response()
}

/// An error answer not yet sent.
struct Refused {
    status: StatusCode,
    error: &'static str,
    description: String,
}

fn refused(status: StatusCode, error: &'static str, description: &str) -> Refused {
    Refused {
        status,
        error,
        description: description.to_owned(),
    }
}

fn secret_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What a grant of the token endpoint asks the issuer for, once checked.
struct Checked {
    username: String,
    protocol: Protocol,
    scopes: Vec<String>,
    /// On refresh: the scope the rules left at login, narrowed like `scopes`.
    base_scope: Option<Vec<String>>,
}

/// `POST /oauth/token`: the server checks the client, the user and the scopes itself, then lets
/// claimrules run the rules and sign.
async fn token(State(app): State<Arc<App>>, Form(form): Form<TokenForm>) -> Response {
    let Some(client) = app.clients.get(form.client_id.as_str()) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    let authenticated = match (client.secret, form.client_secret.as_deref()) {
        (None, None) => true,
        (Some(expected), Some(given)) => secret_eq(expected, given),
        _ => false,
    };
    if !authenticated {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    if form.audience.as_deref().is_some_and(|a| a != AUDIENCE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "unknown audience",
        );
    }
    let checked = match check_grant(&app, &form) {
        Ok(checked) => checked,
        Err(r) => return oauth_error(r.status, r.error, &r.description),
    };
    let Some(account) = app.users.get(checked.username.as_str()) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown user");
    };
    let mut request = TokenRequest::new(form.client_id.as_str(), account.user.clone())
        .client_name(client.name)
        .client_metadata(client.metadata.clone())
        .protocol(checked.protocol.clone())
        .scopes(checked.scopes.clone());
    if let Some(audience) = &form.audience {
        request = request.audience(audience.as_str());
    }
    if let Some(base) = &checked.base_scope {
        request = request.base_scope(base.iter().cloned());
    }

    // The rules are CPU-bound and bounded by their sandbox budget: off the async workers.
    let issuer = app.issuer.clone();
    match tokio::task::spawn_blocking(move || issuer.issue(&request)).await {
        Ok(Ok(issued)) => Json(response(&app, &form.client_id, checked, &issued)).into_response(),
        Ok(Err(e)) => failed(&e),
        Err(_) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the token could not be issued",
        ),
    }
}

/// Checks the grant itself: the password, or the refresh token (used up here: it rotates).
fn check_grant(app: &App, form: &TokenForm) -> Result<Checked, Refused> {
    let asked: Option<Vec<String>> = form
        .scope
        .as_deref()
        .map(|s| s.split_whitespace().map(str::to_owned).collect());
    if let Some(s) = asked
        .iter()
        .flatten()
        .find(|s| !SCOPES.contains(&s.as_str()))
    {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("unknown scope {s}"),
        ));
    }
    match form.grant_type.as_str() {
        "password" => {
            let known = app
                .users
                .get(form.username.as_str())
                .is_some_and(|a| secret_eq(a.password, &form.password));
            if !known {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "wrong username or password",
                ));
            }
            Ok(Checked {
                username: form.username.clone(),
                protocol: Protocol::Password,
                scopes: asked.unwrap_or_default(),
                base_scope: None,
            })
        }
        "refresh_token" => {
            let grant = app
                .refresh
                .lock()
                .ok()
                .and_then(|mut m| m.remove(&form.refresh_token))
                .filter(|g| g.client_id == form.client_id);
            let Some(grant) = grant else {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "unknown or used refresh token",
                ));
            };
            // RFC 6749 §6: a refresh may narrow the scope, never widen it.
            let scopes = asked.unwrap_or_else(|| grant.scopes.clone());
            if let Some(s) = scopes.iter().find(|s| !grant.scopes.contains(s)) {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!("scope {s} was not granted"),
                ));
            }
            let base = grant
                .rule_scope
                .iter()
                .filter(|s| scopes.contains(s))
                .cloned()
                .collect();
            Ok(Checked {
                username: grant.username,
                protocol: Protocol::RefreshToken,
                scopes,
                base_scope: Some(base),
            })
        }
        _ => Err(refused(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be password or refresh_token",
        )),
    }
}

/// The RFC 6749 §5.1 answer, with a new refresh token when `offline_access` was granted.
fn response(app: &App, client_id: &str, checked: Checked, issued: &Issued) -> Value {
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope.join(" "),
    });
    if let Some(id_token) = &issued.id_token {
        body["id_token"] = json!(id_token);
    }
    if checked.scopes.iter().any(|s| s == "offline_access") {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let grant = RefreshGrant {
            client_id: client_id.to_owned(),
            username: checked.username,
            scopes: checked.scopes,
            rule_scope: issued.scope.clone(),
        };
        if let Ok(mut m) = app.refresh.lock() {
            m.insert(token.clone(), grant);
            body["refresh_token"] = json!(token);
        }
    }
    body
}

/// The OAuth answer to a failed issuance: claimrules' one mapping (`invalid_grant` with the
/// rule's message for a denial, `server_error` otherwise).
fn failed(e: &IssueError) -> Response {
    if e.denial_message().is_none() {
        // Rule errors name the rule, line and column: for the log, never for the client.
        eprintln!("embed_axum: token not issued: {e}");
    }
    let answer = e.oauth_error(Endpoint::Token);
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(answer.to_json())).into_response()
}

/// `GET /.well-known/jwks.json`: the public keys APIs verify the tokens with.
async fn jwks(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.issuer.jwks())
}

/// The issuer for `issuer_url` with the rules of `dir`, watched for changes for as long as the
/// issuer lives.
fn issuer(issuer_url: &str, dir: &std::path::Path) -> Result<Issuer, SetupError> {
    let rules = HotRules::load(dir, RuleSetOptions::default())?.watch()?;
    let issuer = Issuer::builder(issuer_url)
        .rules(rules)
        .key(SigningKey::generate(SigningAlg::ES256)?)
        // This server has no userinfo endpoint: the API alone is the access token's audience.
        .userinfo_audience(false)
        .build()?;
    Ok(issuer)
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let local = listener.local_addr()?;
    let issuer_url = format!("http://{local}/");
    let app = Arc::new(App {
        issuer: issuer(&issuer_url, &args.rules)?,
        clients: clients(),
        users: users(),
        refresh: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route("/oauth/token", post(token))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(app);
    println!("embed_axum listening on http://{local}");
    println!("  issuer:   {issuer_url}");
    println!("  rules:    {} (hot reloaded)", args.rules.display());
    println!("  clients:  demo-cli (public), demo-app (secret demo-app-secret)");
    println!("  audience: {AUDIENCE}");
    println!(
        "  users:    ada (admin), eddie (editor), eve (unverified email); password <name>-password"
    );
    use std::io::Write as _;
    std::io::stdout().flush()?;
    axum::serve(listener, router).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed_axum: {e}");
            ExitCode::from(2)
        }
    }
}

//! A token server that signs its own tokens and uses claimrules only to compute the custom
//! claims and the scope (`RuleSet::run`).
//!
//! Use this shape when your server already has its token format and keys: claimrules does not
//! sign anything here. The tokens are HS256 JWTs with a shared secret, which suits a demo (the
//! API needs the same secret); an issuer that third parties verify should sign asymmetrically.
//! The secret comes from `CLAIMS_ONLY_HS256_SECRET` (at least 32 bytes) or, when unset, is
//! random per process. It is never printed.
//!
//! ```text
//! cargo run --example embed_claims_only                    # prints its address and demo logins
//! curl -s http://127.0.0.1:4200/oauth/token -d username=ada -d password=ada-password \
//!      -d 'scope=read:contacts write:contacts'
//! ```
//!
//! `--addr` (default 127.0.0.1:4200; port 0 picks one) and `--rules DIR` (default: the rule
//! below).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use clap::Parser;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use claimrules::{Context, RuleError, RuleSet, User};

const ISSUER: &str = "https://tokens.example.com/";
const AUDIENCE: &str = "https://api.example.com";
const CLIENT_ID: &str = "claims-only-demo";
const LIFETIME: i64 = 900;

/// The rule used without `--rules`: plan and roles as claims; the free plan loses write access.
const RULE: &str = r#"
    let ns = "https://example.com/";
    context.accessToken[ns + "plan"] = user.app_metadata.plan;
    context.accessToken[ns + "roles"] = user.app_metadata.roles;
    if user.app_metadata.plan == "free" {
        let granted = context.request.body.scope.split(" ");
        granted.retain(|s| s != "write:contacts" && s != "");
        context.accessToken.scope = granted;
    }
"#;

#[derive(Debug, Parser)]
#[command(about = "A token server that signs its own tokens; claimrules computes claims and scope")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:4200")]
    addr: SocketAddr,
    /// A rules folder to use instead of the built-in demo rule.
    #[arg(long)]
    rules: Option<PathBuf>,
}

struct App {
    rules: RuleSet,
    key: EncodingKey,
    users: HashMap<&'static str, (&'static str, User)>,
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    username: String,
    password: String,
    #[serde(default)]
    scope: String,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `POST /oauth/token`: this server's own token, with the rules' claims and scope.
async fn token(State(app): State<Arc<App>>, Form(form): Form<TokenForm>) -> Response {
    let account = app
        .users
        .get(form.username.as_str())
        .filter(|(password, _)| bool::from(password.as_bytes().ct_eq(form.password.as_bytes())));
    let Some((_, user)) = account else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "wrong username or password",
        );
    };
    let requested: Vec<String> = form.scope.split_whitespace().map(str::to_owned).collect();
    let context = Context::login(CLIENT_ID)
        .audience(AUDIENCE)
        .body(json!({"scope": requested.join(" ")}));
    let sub = user.user_id().to_owned();
    let (shared, user) = (app.clone(), user.clone());
    let outcome =
        tokio::task::spawn_blocking(move || shared.rules.run(user.into(), context.into())).await;
    let outcome = match outcome {
        Ok(Ok(o)) => o,
        Ok(Err(RuleError::Denied { message, .. })) => {
            return oauth_error(StatusCode::FORBIDDEN, "access_denied", &message)
        }
        Ok(Err(e)) => {
            eprintln!("embed_claims_only: rules failed: {e}");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "try again later",
            );
        }
        Err(_) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "try again later",
            )
        }
    };
    let scope = outcome.scope.unwrap_or(requested).join(" ");
    // The rules' claims first, then this server's standard claims over them (the namespace
    // rule already kept rules away from registered names; this keeps it so by construction).
    let mut claims: Map<String, Value> = outcome.access_token;
    let now = unix_now();
    for (k, v) in [
        ("iss", json!(ISSUER)),
        ("sub", json!(sub)),
        ("aud", json!(AUDIENCE)),
        ("iat", json!(now)),
        ("exp", json!(now + LIFETIME)),
        ("client_id", json!(CLIENT_ID)),
        ("scope", json!(scope)),
    ] {
        claims.insert(k.into(), v);
    }
    match encode(&Header::new(Algorithm::HS256), &claims, &app.key) {
        Ok(jwt) => Json(json!({
            "access_token": jwt,
            "token_type": "Bearer",
            "expires_in": LIFETIME,
            "scope": scope,
        }))
        .into_response(),
        Err(e) => {
            eprintln!("embed_claims_only: signing failed: {e}");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "try again later",
            )
        }
    }
}

fn secret() -> Result<Vec<u8>, String> {
    match std::env::var("CLAIMS_ONLY_HS256_SECRET") {
        Ok(s) if s.len() >= 32 => Ok(s.into_bytes()),
        Ok(_) => Err("CLAIMS_ONLY_HS256_SECRET must be at least 32 bytes".into()),
        Err(_) => {
            let mut bytes = vec![0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            Ok(bytes)
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let rules = match &args.rules {
        Some(dir) => RuleSet::load(dir)?,
        None => RuleSet::from_sources(
            vec![("plan-and-roles".into(), RULE.into())],
            json!({}),
            Default::default(),
        )?,
    };
    let users = HashMap::from([
        (
            "ada",
            (
                "ada-password",
                User::new("local|ada")
                    .email_verified(true)
                    .app_metadata(json!({"plan": "pro", "roles": ["admin"]})),
            ),
        ),
        (
            "bob",
            (
                "bob-password",
                User::new("local|bob")
                    .email_verified(true)
                    .app_metadata(json!({"plan": "free", "roles": ["viewer"]})),
            ),
        ),
    ]);
    let app = Arc::new(App {
        rules,
        key: EncodingKey::from_secret(&secret()?),
        users,
    });
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let local = listener.local_addr()?;
    println!("embed_claims_only listening on http://{local}");
    println!("  token:    POST http://{local}/oauth/token (username, password, scope)");
    println!("  issuer:   {ISSUER} (HS256)");
    println!("  audience: {AUDIENCE}");
    println!("  users:    ada / ada-password (plan pro), bob / bob-password (plan free)");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let router = Router::new()
        .route("/oauth/token", post(token))
        .with_state(app);
    axum::serve(listener, router).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed_claims_only: {e}");
            ExitCode::from(2)
        }
    }
}

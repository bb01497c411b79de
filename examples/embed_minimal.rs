//! A token server of your own that uses claimrules only to run the rules and sign.
//!
//! This server owns everything else: its users (in memory here), how they authenticate (a
//! password form post, for the demo), which clients and APIs exist. For each token request it
//! hands claimrules a `User`, the client and the API, and gets back signed tokens whose custom
//! claims and scope the rules decided. It serves its JWKS so APIs can verify the tokens with
//! `claimrules::verify` or any JWT library.
//!
//! ```text
//! cargo run --example embed_minimal                        # prints its address and demo logins
//! curl -s http://127.0.0.1:4100/oauth/token -d grant_type=password -d client_id=demo-cli \
//!      -d username=ada -d password=ada-password \
//!      -d audience=https://api.example.com -d 'scope=openid read:contacts'
//! curl -s http://127.0.0.1:4100/.well-known/jwks.json
//! ```
//!
//! `--addr` (default 127.0.0.1:4100; port 0 picks one) and `--rules DIR` (a rules folder, hot
//! reloaded; default: the two rules below). The signing key is generated at start, so tokens
//! stop verifying when the process restarts; a real server keeps its key
//! (`SigningKey::from_pkcs8`). The passwords are compared in constant time but stored in clear:
//! a real server stores hashes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    HotRules, IssueError, Issuer, RuleError, RuleSet, SigningAlg, SigningKey, TokenRequest, User,
};

/// Rules used without `--rules`: roles as a claim, unverified emails denied, viewers read-only.
const RULES: [(&str, &str); 2] = [
    (
        "require-verified-email",
        r#"if !user.email_verified { deny("please verify your email first"); }"#,
    ),
    (
        "roles",
        r#"
        let roles = user.app_metadata.roles;
        if roles != () {
            context.accessToken["https://example.com/roles"] = roles;
            context.idToken["https://example.com/roles"] = roles;
            if roles.contains("viewer") && !roles.contains("admin") {
                context.accessToken.scope = ["openid", "read:contacts"];
            }
        }
        "#,
    ),
];

#[derive(Debug, Parser)]
#[command(about = "A minimal token server that uses claimrules to run rules and sign")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:4100")]
    addr: SocketAddr,
    /// A rules folder to load and hot-reload instead of the built-in demo rules.
    #[arg(long)]
    rules: Option<PathBuf>,
}

/// One account of this server's own user store.
struct Account {
    password: &'static str,
    user: User,
}

/// The one API this server issues tokens for.
struct Api {
    identifier: &'static str,
    scopes: [&'static str; 2],
    token_lifetime: u64,
}

/// Everything the handlers share.
struct App {
    issuer: Issuer,
    client_id: &'static str,
    api: Api,
    users: HashMap<&'static str, Account>,
}

fn users() -> HashMap<&'static str, Account> {
    let ada = User::new("local|ada")
        .email("ada@example.com")
        .email_verified(true)
        .name("Ada Lovelace")
        .app_metadata(json!({"roles": ["admin"]}));
    let bob = User::new("local|bob")
        .email("bob@example.com")
        .email_verified(true)
        .app_metadata(json!({"roles": ["viewer"]}));
    let eve = User::new("local|eve").email("eve@example.com");
    HashMap::from([
        (
            "ada",
            Account {
                password: "ada-password",
                user: ada,
            },
        ),
        (
            "bob",
            Account {
                password: "bob-password",
                user: bob,
            },
        ),
        (
            "eve",
            Account {
                password: "eve-password",
                user: eve,
            },
        ),
    ])
}

/// The token request's form fields.
#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: String,
    client_id: String,
    username: String,
    password: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    audience: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /oauth/token`: authenticates the user itself, then lets claimrules issue the tokens.
async fn token(State(app): State<Arc<App>>, Form(form): Form<TokenForm>) -> Response {
    if form.grant_type != "password" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this demo supports grant_type=password only",
        );
    }
    if form.client_id != app.client_id {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    }
    if form
        .audience
        .as_deref()
        .is_some_and(|a| a != app.api.identifier)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unknown audience",
        );
    }
    let scopes: Vec<String> = form.scope.split_whitespace().map(str::to_owned).collect();
    let known = |s: &String| {
        ["openid", "profile", "email"].contains(&s.as_str()) || app.api.scopes.contains(&s.as_str())
    };
    if let Some(s) = scopes.iter().find(|s| !known(s)) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("unknown scope {s}"),
        );
    }
    let account = app
        .users
        .get(form.username.as_str())
        .filter(|a| bool::from(a.password.as_bytes().ct_eq(form.password.as_bytes())));
    let Some(account) = account else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "wrong username or password",
        );
    };
    let user = account.user.clone();
    // Rules are CPU-bound and bounded by their sandbox budget: keep them off the async workers.
    let request = TokenRequest::new(app.client_id, user)
        .audience(app.api.identifier)
        .access_token_lifetime(app.api.token_lifetime)
        .scopes(scopes);
    let issuer = app.issuer.clone();
    let issued = tokio::task::spawn_blocking(move || issuer.issue(&request)).await;
    match issued {
        Ok(Ok(issued)) => {
            let mut body = json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope.join(" "),
            });
            if let Some(id_token) = issued.id_token {
                body["id_token"] = Value::String(id_token);
            }
            Json(body).into_response()
        }
        Ok(Err(IssueError::Rules(RuleError::Denied { message, .. }))) => {
            oauth_error(StatusCode::FORBIDDEN, "access_denied", &message)
        }
        Ok(Err(e)) => {
            // Rule errors name the rule, line and column: for the log, never for the client.
            eprintln!("embed_minimal: token not issued: {e}");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the token could not be issued",
            )
        }
        Err(_) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the token could not be issued",
        ),
    }
}

/// `GET /.well-known/jwks.json`: the public keys APIs verify the tokens with.
async fn jwks(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.issuer.jwks())
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let local = listener.local_addr()?;
    let issuer_url = format!("http://{local}/");
    let rules: HotRules = match &args.rules {
        Some(dir) => {
            let rules = HotRules::load(dir, Default::default())?;
            rules.watch()?;
            rules
        }
        None => {
            let sources = RULES.iter().map(|(n, s)| (n.to_string(), s.to_string()));
            RuleSet::from_sources(sources.collect(), json!({}), Default::default())?.into()
        }
    };
    let issuer = Issuer::builder(issuer_url.as_str())
        .rules(rules)
        .key(SigningKey::generate(SigningAlg::RS256)?)
        .build()?;
    let api = Api {
        identifier: "https://api.example.com",
        scopes: ["read:contacts", "write:contacts"],
        token_lifetime: 3600,
    };
    let app = Arc::new(App {
        issuer,
        client_id: "demo-cli",
        api,
        users: users(),
    });
    let router = Router::new()
        .route("/oauth/token", post(token))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(app);
    println!("embed_minimal listening on http://{local}");
    println!("  issuer:    {issuer_url}");
    println!("  token:     POST http://{local}/oauth/token (grant_type=password)");
    println!("  client_id: demo-cli");
    println!("  audience:  https://api.example.com");
    println!("  users:     ada / ada-password, bob / bob-password, eve / eve-password");
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
            eprintln!("embed_minimal: {e}");
            ExitCode::from(2)
        }
    }
}

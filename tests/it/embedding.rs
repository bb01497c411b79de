//! Embedding claimrules: the embedding examples run as real processes and issue tokens that
//! verify (embed_axum's own tests are in `embed_axum.rs`), and a host app serves the claimrules
//! endpoints nested under a prefix with a working login.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use claimrules::{verify, VerifyOptions};
use common::*;
use serde_json::{json, Value};

const EXAMPLES: [&str; 3] = ["embed_minimal", "embed_claims_only", "embed_axum"];

/// The examples' binaries, built once (a no-op after `cargo test --all-targets`, which builds
/// examples; `cargo test --test embedding` alone does not, and a stale binary would test old
/// code).
fn example_bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // target/<profile>/deps/embedding-<hash> → target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>/deps layout")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet"]);
        for e in EXAMPLES {
            cmd.args(["--example", e]);
        }
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
            None => panic!("unexpected target layout: {}", profile_dir.display()),
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the examples failed");
        profile_dir.join("examples")
    });
    dir.join(name)
}

/// A running example, killed when dropped.
pub(crate) struct Example {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an example on a free port and waits (bounded) for its `listening on` line.
fn start(name: &str, envs: &[(&str, &str)]) -> Example {
    start_with(name, &[], envs)
}

/// [`start`] with more command-line arguments.
pub(crate) fn start_with(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Example {
    let mut child = Command::new(example_bin(name))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout after the address is read: a closed pipe would make the example's
    // next println! fail.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut example = Example {
        child,
        base: String::new(),
    };
    let marker = format!("{name} listening on ");
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{name} did not print its address within 30 s"));
        if let Some(url) = line.strip_prefix(&marker) {
            example.base = url.trim().to_owned();
            break;
        }
    }
    example
}

pub(crate) async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_minimal_issues_tokens_that_verify_accepts() {
    let ex = start("embed_minimal", &[]);
    let token_url = format!("{}/oauth/token", ex.base);
    let issuer = format!("{}/", ex.base);
    let login = |user: &'static str, password: &'static str, scope: &'static str| {
        let url = token_url.clone();
        async move {
            post_form(
                &url,
                &[
                    ("grant_type", "password"),
                    ("client_id", "demo-cli"),
                    ("username", user),
                    ("password", password),
                    ("audience", AUDIENCE),
                    ("scope", scope),
                ],
            )
            .await
        }
    };
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", ex.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "RS256");

    let (status, body) = login("ada", "ada-password", "openid read:contacts write:contacts").await;
    assert_eq!(status, 200, "{body}");
    let at = body["access_token"].as_str().expect("access_token");
    let claims = verify(
        at,
        &jwks,
        &VerifyOptions::new(&issuer, AUDIENCE).require_scope("write:contacts"),
    )
    .expect("verify accepts the access token");
    assert_eq!(claims["sub"], "local|ada");
    assert_eq!(claims["azp"], "demo-cli");
    assert_eq!(claims["https://example.com/roles"], json!(["admin"]));
    let id = verify(
        body["id_token"].as_str().expect("id_token with openid"),
        &jwks,
        &VerifyOptions::new(&issuer, "demo-cli"),
    )
    .expect("verify accepts the ID token");
    assert_eq!(id["https://example.com/roles"], json!(["admin"]));

    // The rules narrow a viewer's scope; the token and the response say so.
    let (status, body) = login("bob", "bob-password", "openid read:contacts write:contacts").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "openid read:contacts");
    let claims = verify(
        body["access_token"].as_str().unwrap(),
        &jwks,
        &VerifyOptions::new(&issuer, AUDIENCE),
    )
    .unwrap();
    assert_eq!(claims["scope"], "openid read:contacts");

    // A rule's denial reaches the client with its message; a wrong password never runs rules.
    let (status, body) = login("eve", "eve-password", "openid").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied");
    assert_eq!(body["error_description"], "please verify your email first");
    let (status, body) = login("ada", "wrong", "openid").await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_claims_only_signs_its_own_tokens_with_the_rules_claims_and_scope() {
    let secret = "a-test-secret-that-is-long-enough-0123456789";
    let ex = start("embed_claims_only", &[("CLAIMS_ONLY_HS256_SECRET", secret)]);
    let url = format!("{}/oauth/token", ex.base);
    let decode = |jwt: &str| {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&["https://api.example.com"]);
        v.set_issuer(&["https://tokens.example.com/"]);
        jsonwebtoken::decode::<Value>(
            jwt,
            &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            &v,
        )
        .expect("HS256 token with the shared secret")
        .claims
    };
    let scope = "read:contacts write:contacts";
    let (status, body) = post_form(
        &url,
        &[
            ("username", "ada"),
            ("password", "ada-password"),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = decode(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "local|ada");
    assert_eq!(claims["scope"], scope);
    assert_eq!(claims["https://example.com/plan"], "pro");
    assert_eq!(claims["https://example.com/roles"], json!(["admin"]));

    let (status, body) = post_form(
        &url,
        &[
            ("username", "bob"),
            ("password", "bob-password"),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "read:contacts");
    let claims = decode(body["access_token"].as_str().unwrap());
    assert_eq!(claims["scope"], "read:contacts");
    assert_eq!(claims["https://example.com/plan"], "free");

    let (status, _) = post_form(&url, &[("username", "bob"), ("password", "nope")]).await;
    assert_eq!(status, 400);
}

/// A host app mounts the whole claimrules server under `/auth`, next to its own routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_nests_the_server_under_a_prefix_and_login_works() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), None, "");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let issuer = format!("{base}/auth/");
    let text = std::fs::read_to_string(&cfg_path).unwrap().replace(
        "issuer = \"http://127.0.0.1:1/\"",
        &format!("issuer = \"{issuer}\""),
    );
    std::fs::write(&cfg_path, text).unwrap();
    let prepared = claimrules::server::prepare(&claimrules::server::ServeOptions {
        config: Some(cfg_path),
        no_watch: true,
        ..Default::default()
    })
    .await
    .expect("tenant prepares");
    assert_eq!(prepared.state.issuer.issuer(), issuer);

    let host = axum::Router::new()
        .route("/", axum::routing::get(|| async { "host app home" }))
        .nest("/auth", claimrules::server::app(&prepared));
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            host.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    assert_eq!(
        reqwest::get(&base).await.unwrap().text().await.unwrap(),
        "host app home"
    );
    let discovery: Value = reqwest::get(format!("{issuer}.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer);
    assert_eq!(discovery["token_endpoint"], format!("{issuer}oauth/token"));
    assert_eq!(
        discovery["jwks_uri"],
        format!("{issuer}.well-known/jwks.json")
    );

    // The browser follows the forms' own actions, as a real one would.
    let b = browser();
    let query =
        serde_urlencoded::to_string(authorize_params("openid profile read:contacts")).unwrap();
    let page = b
        .get(format!("{issuer}authorize?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let action = form_action(&html);
    assert_eq!(action, "/auth/login");
    let res = submit_login(&b, &format!("{base}{action}"), &html, ALICE).await;
    assert_eq!(res.status(), 200, "consent page after login");
    // The session cookie stays under the prefix: the host app's own routes never see it.
    let session = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("claimrules_session="))
        .expect("session cookie")
        .to_owned();
    assert!(session.contains("Path=/auth/;"), "{session}");
    let html = res.text().await.unwrap();
    let action = form_action(&html);
    assert_eq!(action, "/auth/consent");
    let res = submit_consent(&b, &format!("{base}{action}"), &html, "allow").await;
    assert_eq!(res.status(), 303);
    let p = location_params(&res);
    assert_eq!(param(&p, "iss").as_deref(), Some(issuer.as_str()));
    let code = param(&p, "code").expect("code");

    let res = reqwest::Client::new()
        .post(format!("{issuer}oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let jwks: Value = reqwest::get(format!("{issuer}.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = verify(
        body["access_token"].as_str().unwrap(),
        &jwks,
        &VerifyOptions::new(&issuer, AUDIENCE).require_scope("read:contacts"),
    )
    .expect("token from the nested server verifies");
    assert_eq!(claims["sub"], "auth0|alice");
    server.abort();
}

/// The `action` of the page's form.
fn form_action(html: &str) -> String {
    let re = regex::Regex::new(r#"<form method="post" action="([^"]*)""#).unwrap();
    re.captures(html)
        .map(|c| c[1].to_owned())
        .unwrap_or_else(|| panic!("a form in {html}"))
}

/// The README's "whole server inside your app" block, compiled here (not run: it reads
/// `claimrules.toml` and binds a port); tests/lean checks the README still shows it unchanged.
#[allow(dead_code)]
async fn readme_nested_server() -> Result<(), Box<dyn std::error::Error>> {
    // README begin: nested
    let prepared = claimrules::server::prepare(&claimrules::server::ServeOptions {
        config: Some("claimrules.toml".into()), // issuer = "https://example.com/auth/"
        ..Default::default()
    })
    .await?;
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "your home page" }))
        .nest("/auth", claimrules::server::app(&prepared)); // or server::router(state), no hooks
    let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).await?;
    // README end
    Ok(())
}

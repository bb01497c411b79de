//! Shared helpers of the server integration tests: a real server on a random loopback port,
//! driven by a real HTTP client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use claimrules::server::{prepare, ServeOptions};
use regex::Regex;
use reqwest::redirect::Policy;
use serde_json::Value;

pub const CLIENT_ID: &str = "web";
pub const CLIENT_SECRET: &str = "web-secret-0123456789";
pub const PUBLIC_CLIENT: &str = "spa";
pub const REDIRECT: &str = "http://127.0.0.1:4000/callback";
pub const AUDIENCE: &str = "https://api.example.com";
pub const ALICE: (&str, &str) = ("alice@example.com", "alice-password");
pub const BOB: (&str, &str) = ("bob@example.com", "bob-password");
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn hashes() -> &'static (String, String) {
    static H: OnceLock<(String, String)> = OnceLock::new();
    H.get_or_init(|| {
        (
            claimrules::password::hash(ALICE.1).unwrap(),
            claimrules::password::hash(BOB.1).unwrap(),
        )
    })
}

/// Writes a tenant config into `dir` (rules: the project's sample rules unless `rules` given).
pub fn write_config(dir: &Path, rules: Option<&Path>, extra: &str) -> PathBuf {
    let (ha, hb) = hashes();
    let rules = rules
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"));
    let text = format!(
        r#"
issuer = "http://127.0.0.1:1/"
rules = "{rules}"
data = "data"
{extra}

[[client]]
client_id = "{CLIENT_ID}"
name = "Web App"
client_secret = "{CLIENT_SECRET}"
redirect_uris = ["{REDIRECT}", "http://127.0.0.1:4000/other?x=1"]

[[client]]
client_id = "{PUBLIC_CLIENT}"
name = "Single page app"
redirect_uris = ["{REDIRECT}"]
first_party = true

[[client]]
client_id = "demo-app"
name = "Strict app"
client_secret = "{CLIENT_SECRET}"
redirect_uris = ["{REDIRECT}"]

[[client]]
client_id = "code-only"
client_secret = "{CLIENT_SECRET}"
redirect_uris = ["{REDIRECT}"]
grant_types = ["authorization_code"]

[[api]]
identifier = "{AUDIENCE}"
name = "Contacts API"
scopes = ["read:contacts", "write:contacts"]
allow_offline_access = true
token_lifetime = 600

[[api]]
identifier = "https://no-offline.example.com"
scopes = ["read:x"]

[[user]]
user_id = "auth0|alice"
email = "{a}"
username = "alice"
email_verified = true
name = "Alice Example"
nickname = "alice"
password_hash = "{ha}"
app_metadata = {{ roles = ["admin"], plan = "pro" }}
user_metadata = {{ theme = "dark" }}

[[user]]
user_id = "auth0|bob"
email = "{b}"
username = "bob"
email_verified = false
name = "Bob Example"
password_hash = "{hb}"
app_metadata = {{ roles = ["viewer"], plan = "free" }}
"#,
        rules = rules.display().to_string().replace('\\', "\\\\"),
        a = ALICE.0,
        b = BOB.0,
    );
    let path = dir.join("claimrules.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running server.
pub struct TestServer {
    pub base: String,
    handle: tokio::task::JoinHandle<()>,
    pub state: std::sync::Arc<claimrules::server::AppState>,
}

impl TestServer {
    /// Starts a server for the config in `dir` (its issuer is rewritten to the bound port).
    pub async fn start(dir: &Path) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg_path = dir.join("claimrules.toml");
        let text = std::fs::read_to_string(&cfg_path).unwrap();
        let re = Regex::new(r#"(?m)^issuer = ".*"$"#).unwrap();
        let text = re
            .replace(&text, format!("issuer = \"http://{addr}/\"").as_str())
            .into_owned();
        std::fs::write(&cfg_path, text).unwrap();
        let prepared = prepare(&ServeOptions {
            config: Some(cfg_path),
            no_watch: true,
            ..Default::default()
        })
        .await
        .expect("server prepares");
        let state = prepared.state.clone();
        let app = claimrules::server::app(&prepared);
        let handle = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        TestServer {
            base: format!("http://{addr}"),
            handle,
            state,
        }
    }

    pub fn stop(self) {
        self.handle.abort();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn jwks(&self) -> Value {
        reqwest::get(self.url("/.well-known/jwks.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A hidden input's value in an HTML page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let re = Regex::new(&format!(r#"name="{name}" value="([^"]*)""#)).unwrap();
    re.captures(html).map(|c| {
        c[1].replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
    })
}

/// Standard authorize parameters for the confidential client with PKCE.
pub fn authorize_params(scope: &str) -> Vec<(String, String)> {
    vec![
        ("response_type".into(), "code".into()),
        ("client_id".into(), CLIENT_ID.into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("scope".into(), scope.into()),
        ("audience".into(), AUDIENCE.into()),
        ("state".into(), "st-123".into()),
        ("nonce".into(), "n-456".into()),
        ("code_challenge".into(), CHALLENGE.into()),
        ("code_challenge_method".into(), "S256".into()),
    ]
}

pub fn authorize_url(server: &TestServer, params: &[(String, String)]) -> String {
    format!(
        "{}/authorize?{}",
        server.base,
        serde_urlencoded::to_string(params).unwrap()
    )
}

/// Query parameters of a redirect `Location`.
pub fn location_params(res: &reqwest::Response) -> Vec<(String, String)> {
    let loc = res
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap();
    let url = url::Url::parse(loc).expect("absolute Location");
    url.query_pairs().into_owned().collect()
}

pub fn param(params: &[(String, String)], k: &str) -> Option<String> {
    params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// Posts the form of the page `html` to `url`: its hidden `authz` and `csrf` fields plus `fields`.
pub async fn submit_form(
    client: &reqwest::Client,
    url: &str,
    html: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let authz = hidden(html, "authz").expect("authz field");
    let csrf = hidden(html, "csrf").expect("csrf field");
    let mut form = vec![("authz", authz.as_str()), ("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    client.post(url).form(&form).send().await.unwrap()
}

/// Posts the login form of the page `html` to `url` as `user`.
pub async fn submit_login(
    client: &reqwest::Client,
    url: &str,
    html: &str,
    user: (&str, &str),
) -> reqwest::Response {
    submit_form(
        client,
        url,
        html,
        &[("username", user.0), ("password", user.1)],
    )
    .await
}

/// Posts the consent form of the page `html` to `url` with `decision`.
pub async fn submit_consent(
    client: &reqwest::Client,
    url: &str,
    html: &str,
    decision: &str,
) -> reqwest::Response {
    submit_form(client, url, html, &[("decision", decision)]).await
}

/// Runs login (+ consent when asked) in `client` and returns the final redirect response.
pub async fn login_and_consent(
    server: &TestServer,
    client: &reqwest::Client,
    params: &[(String, String)],
    user: (&str, &str),
) -> reqwest::Response {
    let res = client
        .get(authorize_url(server, params))
        .send()
        .await
        .unwrap();
    if res.status().is_redirection() {
        return res;
    }
    assert_eq!(res.status(), 200, "login page expected");
    let html = res.text().await.unwrap();
    let res = submit_login(client, &server.url("/login"), &html, user).await;
    consent_if_asked(server, client, res, "allow").await
}

/// When `res` is the consent page, answers it with `decision`.
pub async fn consent_if_asked(
    server: &TestServer,
    client: &reqwest::Client,
    res: reqwest::Response,
    decision: &str,
) -> reqwest::Response {
    if res.status() != 200 {
        return res;
    }
    let html = res.text().await.unwrap();
    assert!(
        html.contains("action=\"/consent\""),
        "consent page expected: {html}"
    );
    submit_consent(client, &server.url("/consent"), &html, decision).await
}

/// Full flow to a code.
pub async fn get_code(server: &TestServer, scope: &str, user: (&str, &str)) -> String {
    let client = browser();
    let res = login_and_consent(server, &client, &authorize_params(scope), user).await;
    assert_eq!(res.status(), 303, "redirect with code expected");
    let p = location_params(&res);
    assert_eq!(param(&p, "state").as_deref(), Some("st-123"));
    param(&p, "code").expect("code in redirect")
}

/// Exchanges a code with the confidential client (form body, secret in the body).
/// A grant of Alice's to the test client for the test API with `scopes`, as the store keeps
/// one: for codes and refresh tokens minted through the store instead of a login.
pub fn alice_grant(scopes: &str) -> claimrules::store::Grant {
    claimrules::store::Grant {
        client_id: CLIENT_ID.into(),
        user_id: "auth0|alice".into(),
        audience: Some(AUDIENCE.into()),
        scopes: scopes.split(' ').map(String::from).collect(),
        redirect_uri: REDIRECT.into(),
        nonce: None,
        code_challenge: None,
        auth_time: 0,
        session_id: None,
        request: serde_json::json!({}),
        rule_scope: None,
        claims: None,
    }
}

pub async fn exchange(server: &TestServer, code: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
}

pub async fn refresh(server: &TestServer, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/oauth/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .unwrap()
}

/// Decodes a JWT's payload without verifying (tests verify separately).
pub fn payload(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn header(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A fresh PostgreSQL schema for one test; the returned URL selects it through `search_path`.
/// PostgreSQL comes from `CLAIMRULES_TEST_POSTGRES_URL` or postgres://postgres@127.0.0.1:5432/test;
/// when it is unreachable this panics with a message saying so (tests never skip).
pub async fn fresh_postgres_schema(prefix: &str) -> String {
    use sqlx::Connection;
    let base = std::env::var("CLAIMRULES_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for this test and is unreachable at {base}: {e}. \
             Start it or set CLAIMRULES_TEST_POSTGRES_URL."
            )
        });
    let schema = format!(
        "{prefix}_{}",
        claimrules::crypto::random_token(6)
            .to_ascii_lowercase()
            .replace(['-', '_'], "x")
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

/// The real `claimrules` binary serving the config written by [`write_config`] (with `extra`) in
/// `dir`, on a free loopback port (the config's issuer is set to it); killed on drop.
/// `CLAIMRULES_TEST_BIN` names another binary (e.g. `target/release/claimrules`).
pub struct BinServer {
    pub child: std::process::Child,
    pub base: String,
    pub port: u16,
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts [`BinServer`] and waits until it answers discovery.
pub async fn start_binary(dir: &Path, extra: &str) -> BinServer {
    start_binary_with(dir, extra, &[], "warn").await
}

/// [`start_binary`] with more `serve` arguments and a `RUST_LOG` filter; stderr goes to
/// `dir/server.log`.
pub async fn start_binary_with(dir: &Path, extra: &str, args: &[&str], log: &str) -> BinServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write_config(dir, None, extra);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "issuer = \"http://127.0.0.1:1/\"",
        &format!("issuer = \"http://127.0.0.1:{port}/\""),
    );
    std::fs::write(&cfg, text).unwrap();
    let bin = std::env::var("CLAIMRULES_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_claimrules").to_owned());
    let log_file = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = std::process::Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--no-watch")
        .args(args)
        .env("RUST_LOG", log)
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("the claimrules binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !reqwest::get(format!("{base}/.well-known/openid-configuration"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not come up: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    BinServer { child, base, port }
}

/// A loopback port free right now (for processes that bind it themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

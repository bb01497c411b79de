//! Several `claimrules serve` processes on one PostgreSQL store: codes, refresh tokens,
//! sessions, consents and keys are shared; races have exactly one winner; a lost database gives
//! `503 temporarily_unavailable` and the instance recovers by itself.
//!
//! Needs PostgreSQL: `CLAIMRULES_TEST_POSTGRES_URL` or postgres://postgres@127.0.0.1:5432/test.
//! When it is unreachable these tests FAIL with a message saying so; they never skip.

use crate::common;
use crate::common::free_port;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on `port` and waits until it answers.
async fn start(cfg: &std::path::Path, port: u16) -> Instance {
    let child = Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .args([
            "serve",
            "--no-watch",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let inst = Instance {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/.well-known/jwks.json", inst.base)).await {
            if r.status() == 200 {
                return inst;
            }
        }
        assert!(
            Instant::now() < deadline,
            "instance on {port} did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config for two instances sharing `database_url`; the issuer is instance A's URL.
fn config(dir: &std::path::Path, db: &str, issuer_port: u16) -> std::path::PathBuf {
    let path = write_config(
        dir,
        None,
        &format!("database_url = \"{db}\"\nkey_refresh_interval = 1"),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "issuer = \"http://127.0.0.1:1/\"",
            &format!("issuer = \"http://127.0.0.1:{issuer_port}/\""),
        ),
    )
    .unwrap();
    path
}

async fn code_at(base: &str, client: &reqwest::Client, scope: &str) -> reqwest::Response {
    let params = authorize_params(scope);
    let url = format!(
        "{base}/authorize?{}",
        serde_urlencoded::to_string(&params).unwrap()
    );
    let res = client.get(url).send().await.unwrap();
    if res.status().is_redirection() {
        return res;
    }
    let html = res.text().await.unwrap();
    let res = submit_login(client, &format!("{base}/login"), &html, ALICE).await;
    if res.status() != 200 {
        return res;
    }
    let html = res.text().await.unwrap();
    client
        .post(format!("{base}/consent"))
        .form(&[
            ("authz", hidden(&html, "authz").unwrap().as_str()),
            ("csrf", hidden(&html, "csrf").unwrap().as_str()),
            ("decision", "allow"),
        ])
        .send()
        .await
        .unwrap()
}

fn code_of(res: &reqwest::Response) -> String {
    assert_eq!(res.status(), 303);
    param(&location_params(res), "code").expect("code")
}

async fn exchange_at(base: &str, code: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
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

async fn refresh_at(base: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .unwrap()
}

const SCOPE: &str = "openid offline_access read:contacts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_codes_tokens_sessions_consents_and_keys() {
    let db = fresh_postgres_schema("cr_multi").await;
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let cfg = config(dir.path(), &db, pa);
    let a = start(&cfg, pa).await;
    let b = start(&cfg, pb).await;

    // Same JWKS everywhere (the first instance generated the key under the store's lock).
    let ja: Value = reqwest::get(format!("{}/.well-known/jwks.json", a.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jb: Value = reqwest::get(format!("{}/.well-known/jwks.json", b.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ja, jb);
    assert_eq!(ja["keys"].as_array().unwrap().len(), 1);
    let old_kid = ja["keys"][0]["kid"].clone();

    // A login at A: its session and consent are valid at B (cookies ignore the port).
    let browser_ = browser();
    let code = code_of(&code_at(&a.base, &browser_, SCOPE).await);
    let at_b = code_at(&b.base, &browser_, SCOPE).await;
    assert_eq!(
        at_b.status(),
        303,
        "session and consent from A skip login and consent at B"
    );
    let code_b = code_of(&at_b);

    // A code issued by A is redeemed at B.
    let res = exchange_at(&b.base, &code).await;
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();
    // ... and B's own code at A.
    assert_eq!(exchange_at(&a.base, &code_b).await.status(), 200);

    // The same code at A and B at the same moment: exactly one success, each time.
    for _ in 0..5 {
        let code = code_of(&code_at(&a.base, &browser_, SCOPE).await);
        let (ra, rb) = tokio::join!(exchange_at(&a.base, &code), exchange_at(&b.base, &code));
        let ok = [ra.status(), rb.status()]
            .iter()
            .filter(|s| s.as_u16() == 200)
            .count();
        assert_eq!(ok, 1, "one redemption wins");
        let loser = if ra.status() == 200 { rb } else { ra };
        assert_eq!(
            loser.json::<Value>().await.unwrap()["error"],
            "invalid_grant"
        );
    }

    // A refresh token rotated at A is refused at B, and that reuse revokes the family.
    let r1 = refresh_at(&a.base, &rt).await;
    assert_eq!(r1.status(), 200);
    let rt2 = r1.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(refresh_at(&b.base, &rt).await.status(), 400);
    assert_eq!(
        refresh_at(&b.base, &rt2).await.status(),
        400,
        "reuse revoked the whole grant"
    );

    // The same refresh token at A and B at once: exactly one rotation, each time.
    for _ in 0..5 {
        let code = code_of(&code_at(&a.base, &browser_, SCOPE).await);
        let t: Value = exchange_at(&a.base, &code).await.json().await.unwrap();
        let rt = t["refresh_token"].as_str().unwrap().to_owned();
        let (ra, rb) = tokio::join!(refresh_at(&a.base, &rt), refresh_at(&b.base, &rt));
        let ok = [ra.status(), rb.status()]
            .iter()
            .filter(|s| s.as_u16() == 200)
            .count();
        assert_eq!(ok, 1, "one rotation wins");
    }

    // Key roll-over from the CLI reaches both instances without restart.
    let out = Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .args(["keys", "rotate", "--delay", "0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ja: Value = reqwest::get(format!("{}/.well-known/jwks.json", a.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let jb: Value = reqwest::get(format!("{}/.well-known/jwks.json", b.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ja["keys"].as_array().unwrap().len() == 2 && ja == jb {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both instances publish the new key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new key signs from the second after every older key's activation.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = code_of(&code_at(&a.base, &browser_, SCOPE).await);
        let t: Value = exchange_at(&b.base, &code).await.json().await.unwrap();
        if header(t["access_token"].as_str().unwrap())["kid"] != old_kid {
            break;
        }
        assert!(Instant::now() < deadline, "B signs with the new key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn unreachable_database_at_start_exits_2_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        &format!("postgres://postgres@127.0.0.1:{}/test", free_port()),
        port,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .args([
            "serve",
            "--no-watch",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store"), "{err}");
}

/// A TCP proxy to PostgreSQL that the test can cut and restore.
struct Proxy {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
    target: String,
}

impl Proxy {
    fn new(target: String) -> Proxy {
        Proxy {
            port: free_port(),
            task: None,
            target,
        }
    }
    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        }));
    }
    fn down(&mut self) {
        // Aborting the accept task drops the listener and, with the JoinSet, every connection.
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_database_gives_503_and_the_instance_recovers() {
    let db = fresh_postgres_schema("cr_multi").await;
    let url = url::Url::parse(&db).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let mut proxy = Proxy::new(target);
    proxy.up().await;
    let mut via = url.clone();
    via.set_port(Some(proxy.port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), via.as_str(), port);
    let a = start(&cfg, port).await;
    let browser_ = browser();
    let code = code_of(&code_at(&a.base, &browser_, SCOPE).await);
    let t: Value = exchange_at(&a.base, &code).await.json().await.unwrap();
    let rt = t["refresh_token"].as_str().unwrap().to_owned();

    proxy.down();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = refresh_at(&a.base, &rt).await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body.get("access_token").is_none());
    // The readiness probe says why; liveness stays green.
    let ready = reqwest::get(format!("{}/readyz", a.base)).await.unwrap();
    assert_eq!(ready.status(), 503);
    let why: Value = ready.json().await.unwrap();
    assert!(
        why["reasons"][0]
            .as_str()
            .unwrap()
            .contains("store unreachable"),
        "{why}"
    );
    let live = reqwest::get(format!("{}/healthz", a.base)).await.unwrap();
    assert_eq!(live.status(), 200);

    proxy.up().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = refresh_at(&a.base, &rt).await;
        if res.status() == 200 {
            break;
        }
        assert_eq!(res.status(), 503, "only 503 while recovering");
        assert!(
            Instant::now() < deadline,
            "the instance recovers when the database returns"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = reqwest::get(format!("{}/readyz", a.base)).await.unwrap();
    assert_eq!(ready.status(), 200, "ready again once the database is back");
}

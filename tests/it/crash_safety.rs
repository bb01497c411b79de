//! Crash safety with SQLite: the real binary is killed with SIGKILL under refresh load and
//! restarted on the same data folder. Every refresh token the server handed out in a 200 answer
//! (and that was not presented again) works exactly once afterwards, no rotated token works, a
//! replayed rotated token still revokes its family, and the database passes `PRAGMA
//! integrity_check`.
//!
//! The same with two instances on one PostgreSQL database: one instance is killed under load
//! against both, and every answered token works exactly once at the other instance. That test
//! needs PostgreSQL (`CLAIMRULES_TEST_POSTGRES_URL` or postgres://postgres@127.0.0.1:5432/test)
//! and fails, never skips, when it is unreachable.

use crate::common;
use crate::common::free_port;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SCOPE: &str = "openid offline_access read:contacts";
/// Chains of refresh tokens; more chains than tasks so most are idle (not in flight) at the kill.
const CHAINS: usize = 16;
const TASKS: usize = 4;

struct Server {
    child: Child,
    base: String,
}

async fn start(dir: &Path, port: u16) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("claimrules.toml"))
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--no-watch")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the claimrules binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = reqwest::get(format!("{base}/.well-known/openid-configuration"))
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not come up: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base }
}

fn url(base: &str, params: &[(String, String)]) -> String {
    format!(
        "{base}/authorize?{}",
        serde_urlencoded::to_string(params).unwrap()
    )
}

/// Logs in once (login + consent forms) and returns the browser, which then gets codes directly.
async fn logged_in(base: &str) -> reqwest::Client {
    let b = browser();
    let html = b
        .get(url(base, &authorize_params(SCOPE)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let res = submit_login(&b, &format!("{base}/login"), &html, ALICE).await;
    assert_eq!(res.status(), 200, "consent page");
    let html = res.text().await.unwrap();
    let res = submit_consent(&b, &format!("{base}/consent"), &html, "allow").await;
    assert_eq!(res.status(), 303);
    b
}

async fn mint_refresh_token(base: &str, b: &reqwest::Client) -> String {
    let res = b
        .get(url(base, &authorize_params(SCOPE)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let code = param(&location_params(&res), "code").expect("code");
    let res = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `Ok(status, new token)` or `Err` when the server did not answer.
async fn try_refresh(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<(u16, Option<String>), reqwest::Error> {
    let res = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await?;
    let status = res.status().as_u16();
    let body: Value = res.json().await?;
    Ok((status, body["refresh_token"].as_str().map(str::to_owned)))
}

/// One chain of rotations as the client saw it.
#[derive(Default, Clone)]
struct Chain {
    /// Tokens presented and answered 200 (now rotated).
    rotated: Vec<String>,
    /// The token received in the last 200 answer, not yet presented again.
    current: Option<String>,
    /// A token presented when the server died (no answer): its fate is unknown.
    in_flight: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_refresh_load_loses_no_answered_token() {
    crash_scenario(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_postgres_instance_loses_no_answered_token_at_the_other() {
    crash_scenario(Some(fresh_postgres_schema("cr_crash").await)).await;
}

/// Kills the instance under load; with `postgres` two instances share the database and the
/// checks run at the survivor, else the one SQLite instance is restarted on its data folder.
async fn crash_scenario(postgres: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = postgres
        .as_ref()
        .map(|db| format!("database_url = \"{db}\""))
        .unwrap_or_default();
    let cfg = write_config(dir.path(), None, &extra);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "issuer = \"http://127.0.0.1:1/\"",
        &format!("issuer = \"http://127.0.0.1:{port}/\""),
    );
    std::fs::write(&cfg, text).unwrap();

    let mut server = start(dir.path(), port).await;
    let other = match postgres {
        Some(_) => Some(start(dir.path(), free_port()).await),
        None => None,
    };
    let other_base = other.as_ref().map(|o| o.base.clone());
    let b = logged_in(&server.base).await;
    let chains: Arc<Vec<Mutex<Chain>>> =
        Arc::new((0..CHAINS).map(|_| Mutex::new(Chain::default())).collect());
    for c in chains.iter() {
        let t = mint_refresh_token(&server.base, &b).await;
        c.lock().unwrap().current = Some(t);
    }

    // Refresh load: each task walks its chains round-robin, one request at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        // With two instances, odd tasks load the one that survives.
        let target = match (&other_base, t % 2) {
            (Some(b), 1) => b.clone(),
            _ => server.base.clone(),
        };
        let (chains, stop, answered, base) =
            (chains.clone(), stop.clone(), answered.clone(), target);
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mine: Vec<usize> = (0..CHAINS).filter(|i| i % TASKS == t).collect();
            'load: loop {
                for &i in &mine {
                    if stop.load(Ordering::SeqCst) {
                        break 'load;
                    }
                    let token = {
                        let mut c = chains[i].lock().unwrap();
                        let t = c.current.take().expect("a current token");
                        c.in_flight = Some(t.clone());
                        t
                    };
                    match try_refresh(&http, &base, &token).await {
                        Ok((200, Some(new))) => {
                            let mut c = chains[i].lock().unwrap();
                            c.in_flight = None;
                            c.rotated.push(token);
                            c.current = Some(new);
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((status, _)) => panic!("refresh before the kill failed: {status}"),
                        // The server is gone: the token stays in flight.
                        Err(_) => break 'load,
                    }
                }
            }
        }));
    }
    // Kill in the middle of the load, once a fair number of rotations were answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < 150 {
        assert!(Instant::now() < deadline, "the load did not progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let before_kill = answered.load(Ordering::SeqCst);

    let server = match other {
        Some(o) => o,
        None => start(dir.path(), port).await,
    };
    let http = reqwest::Client::new();
    let chains: Vec<Chain> = chains.iter().map(|c| c.lock().unwrap().clone()).collect();
    let in_flight = chains.iter().filter(|c| c.in_flight.is_some()).count();
    let mut outcome: HashMap<&str, usize> = HashMap::new();
    for (i, c) in chains.iter().enumerate() {
        if let Some(t) = &c.in_flight {
            // Either the rotation committed (token refused: its successor was never seen) or it
            // did not (token works); never twice.
            let (first, _) = try_refresh(&http, &server.base, t).await.unwrap();
            assert!(first == 200 || first == 400, "in-flight token: {first}");
            let (second, _) = try_refresh(&http, &server.base, t).await.unwrap();
            assert_eq!(second, 400, "chain {i}: an in-flight token worked twice");
            *outcome
                .entry(if first == 200 {
                    "in flight, not committed"
                } else {
                    "in flight, committed"
                })
                .or_default() += 1;
            continue;
        }
        let current = c.current.clone().expect("an answered token");
        if i % 2 == 0 {
            // The answered token works exactly once...
            let (s1, next) = try_refresh(&http, &server.base, &current).await.unwrap();
            assert_eq!(s1, 200, "chain {i}: a token answered with 200 was lost");
            assert!(next.is_some());
            let (s2, _) = try_refresh(&http, &server.base, &current).await.unwrap();
            assert_eq!(s2, 400, "chain {i}: a token worked twice");
            // ...and every token it replaced stays dead.
            for old in &c.rotated {
                let (s, _) = try_refresh(&http, &server.base, old).await.unwrap();
                assert_eq!(s, 400, "chain {i}: a rotated token works after restart");
            }
            *outcome.entry("answered: worked once").or_default() += 1;
        } else {
            // A rotated token replayed after the restart is refused and revokes its family.
            let old = c.rotated.last().cloned().unwrap_or_default();
            if !old.is_empty() {
                let (s, _) = try_refresh(&http, &server.base, &old).await.unwrap();
                assert_eq!(s, 400, "chain {i}: a rotated token works after restart");
                let (s, _) = try_refresh(&http, &server.base, &current).await.unwrap();
                assert_eq!(s, 400, "chain {i}: reuse did not revoke the family");
                *outcome
                    .entry("rotated replayed: family revoked")
                    .or_default() += 1;
            } else {
                let (s, _) = try_refresh(&http, &server.base, &current).await.unwrap();
                assert_eq!(s, 200, "chain {i}: a token answered with 200 was lost");
                *outcome.entry("answered: worked once").or_default() += 1;
            }
        }
    }
    assert!(
        outcome.get("answered: worked once").copied().unwrap_or(0) >= CHAINS / 4,
        "too few chains idle at the kill to prove anything: {outcome:?}"
    );
    println!(
        "rotations answered before SIGKILL: {before_kill}; in flight at the kill: {in_flight}; \
         after restart: {outcome:?}"
    );

    if postgres.is_some() {
        let mut server = server;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        return;
    }
    // The database passes SQLite's integrity check (WAL recovered by the restart).
    let db = dir.path().join("data").join("claimrules.db");
    assert!(db.exists(), "{}", db.display());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec!["ok".to_string()]);
    drop(conn);
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

//! A slow API does not stall the server: while 64 logins of the real binary wait on an API
//! that answers after one second, logins whose rules call nothing keep their latency (a rule
//! waiting on HTTP gives its client's rule slot up, and the blocking pool has room for the
//! waiting runs).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{self, authorize_params, browser, submit_consent, submit_login, ALICE, BOB};

/// Concurrent logins that wait on the slow API.
const WAITING: usize = 64;

struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An API that answers after one second and counts the requests it holds.
async fn slow_api(in_flight: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/slow",
        get(move || {
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/slow")
}

fn rules(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("rules.toml"),
        r#"
configuration_env = { SLOW_URL = "CLAIMRULES_TEST_SLOW_URL" }

[http]
allow = ["http://127.0.0.1"]
allow_private = true
timeout_ms = 5000
budget_ms = 8000

[[rule]]
name = "enrich"
"#,
    )
    .unwrap();
    std::fs::write(
        rules.join("enrich.rhai"),
        r#"
        if user.user_id == "auth0|alice" {
            let r = http_get(configuration.SLOW_URL);
            context.accessToken["https://example.com/enriched"] = r.json.ok;
        }
        context.accessToken["https://example.com/ran"] = true;
        "#,
    )
    .unwrap();
    rules
}

async fn start(dir: &Path, api: &str) -> (Binary, String) {
    let port = common::free_port();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("claimrules.toml"))
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--no-watch")
        .env("CLAIMRULES_TEST_SLOW_URL", api)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let child = Binary(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(format!("{base}/.well-known/openid-configuration"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < deadline,
            "server did not start: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

fn authorize(base: &str) -> String {
    format!(
        "{base}/authorize?{}",
        serde_urlencoded::to_string(authorize_params("openid")).unwrap()
    )
}

/// Logs `user` in once (login + consent); the browser then gets codes from its session.
async fn session(base: &str, user: (&str, &str)) -> reqwest::Client {
    let b = browser();
    let html = b
        .get(authorize(base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let res = submit_login(&b, &format!("{base}/login"), &html, user).await;
    let res = if res.status() == 200 {
        let html = res.text().await.unwrap();
        submit_consent(&b, &format!("{base}/consent"), &html, "allow").await
    } else {
        res
    };
    assert_eq!(res.status(), 303, "{user:?} logs in");
    b
}

/// One session login to a code; its latency.
async fn timed_login(b: &reqwest::Client, base: &str) -> Duration {
    let started = Instant::now();
    let res = b.get(authorize(base)).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(res.status(), 303);
    let p = common::location_params(&res);
    assert!(common::param(&p, "code").is_some(), "a code: {p:?}");
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_without_http_keep_their_latency_while_64_wait_on_a_slow_api() {
    let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let api = slow_api(in_flight.clone(), peak.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(dir.path());
    common::write_config(dir.path(), Some(&rules), "");
    let (_server, base) = start(dir.path(), &api).await;

    let alice = session(&base, ALICE).await;
    let bob = session(&base, BOB).await;
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(timed_login(&bob, &base).await);
    }
    let idle = median(idle);

    let started = Instant::now();
    let waiting: Vec<_> = (0..WAITING)
        .map(|_| {
            let (alice, base) = (alice.clone(), base.clone());
            tokio::spawn(async move { timed_login(&alice, &base).await })
        })
        .collect();
    // Every one of them reaches the API: none is queued behind a rule slot.
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight.load(Ordering::SeqCst) < WAITING {
        assert!(
            Instant::now() < deadline,
            "only {} of {WAITING} logins reached the API",
            in_flight.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut loaded = Vec::new();
    while in_flight.load(Ordering::SeqCst) >= WAITING / 2 && loaded.len() < 30 {
        loaded.push(timed_login(&bob, &base).await);
    }
    assert!(
        loaded.len() >= 10,
        "too few logins measured while the API was slow"
    );
    let worst = *loaded.iter().max().unwrap();
    let loaded_median = median(loaded.clone());
    for t in waiting {
        let took = t.await.unwrap();
        assert!(
            took >= Duration::from_millis(900),
            "{took:?}: waited on the API"
        );
    }
    let all = started.elapsed();
    eprintln!(
        "idle median {idle:?}; with {WAITING} logins waiting on the API: median {loaded_median:?}, \
         worst {worst:?} ({} measured); all {WAITING} slow logins done in {all:?}; API peak {}",
        loaded.len(),
        peak.load(Ordering::SeqCst)
    );
    assert!(
        loaded_median <= idle * 3 + Duration::from_millis(15),
        "median login latency {loaded_median:?} while the API is slow, {idle:?} idle"
    );
    assert!(worst < Duration::from_millis(500), "worst {worst:?}");
    assert!(
        all < Duration::from_secs(4),
        "the waiting logins took {all:?}"
    );
}

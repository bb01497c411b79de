//! A rule that loops forever for one client cannot starve the server: that client's logins end
//! with `server_error` (the sandbox stops the loop), while concurrent logins of other clients keep
//! succeeding. The runtime mirrors the binary's (2 workers, at most 8 blocking threads), so the
//! looping rule competes for the same bounded pool the real server has; the server lets one
//! client hold at most `RULE_RUNS_PER_CLIENT` blocking threads, so 12 concurrent looping logins
//! cannot fill the pool. Latencies are measured and printed (`--nocapture`), not asserted.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use claimrules::issuer::TokenRequest;
use claimrules::model::Protocol;
use common::*;
use serde_json::json;

const LOOPER: &str = "looper";
/// A hang detector, far above the 200 ms budget: a request past it means the loop was not stopped.
const HANG: Duration = Duration::from_secs(20);

fn rules(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("10-loop.rhai"),
        r#"
if context.clientID == "looper" {
    loop { }
}
context.accessToken["https://example.com/ok"] = true;
"#,
    )
    .unwrap();
}

fn extra() -> String {
    format!(
        r#"
[[client]]
client_id = "{LOOPER}"
client_secret = "looper-secret-0123456789"
redirect_uris = ["{REDIRECT}"]
first_party = true
"#
    )
}

fn params(client: &str) -> Vec<(String, String)> {
    let mut p = authorize_params("openid");
    p.retain(|(k, _)| k != "client_id" && k != "audience");
    p.push(("client_id".into(), client.into()));
    p
}

/// One `/authorize` with an existing session: the rules run and the answer is a redirect.
async fn authorize_once(
    s: &TestServer,
    b: &reqwest::Client,
    client: &str,
) -> (Duration, Vec<(String, String)>) {
    let start = Instant::now();
    let res = tokio::time::timeout(HANG, b.get(authorize_url(s, &params(client))).send())
        .await
        .expect("no hang")
        .unwrap();
    let took = start.elapsed();
    assert_eq!(res.status(), 303, "{client}");
    (took, location_params(&res))
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pct = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    println!(
        "{name}: n={} p50={:?} p95={:?} max={:?}",
        v.len(),
        pct(0.5),
        pct(0.95),
        v[v.len() - 1]
    );
}

#[test]
fn a_looping_rule_fails_its_own_client_while_others_log_in() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    rules(&rules_dir);
    write_config(dir.path(), Some(&rules_dir), &extra());
    let s = TestServer::start(dir.path()).await;

    // The pipeline itself: the loop ends with an error that is not a denial.
    let client = s.state.config.client(LOOPER).unwrap().clone();
    let issuer = s.state.issuer.clone();
    let (err, took) = tokio::task::spawn_blocking(move || {
        let req =
            TokenRequest::for_client(&client, json!({"user_id": "auth0|alice", "email": ALICE.0}))
                .scopes(["openid"])
                .auth_time(0)
                .protocol(Protocol::AuthorizationCode)
                .request(json!({"query": {}, "body": {}}))
                .logins_count(1);
        let start = Instant::now();
        let r = issuer.run_rules(&req);
        (r.err(), start.elapsed())
    })
    .await
    .unwrap();
    let err = err.expect("the looping rule must be stopped with an error");
    assert!(!err.is_denial(), "a sandbox stop, not a denial: {err}");
    println!("looping pipeline stopped after {took:?}: {err}");

    // One logged-in browser per task: the first login runs the full form flow.
    let login = |client: &'static str| {
        let s = &s;
        async move {
            let b = browser();
            let res = login_and_consent(s, &b, &params(client), ALICE).await;
            assert_eq!(res.status(), 303);
            (b, location_params(&res))
        }
    };
    let (_, first) = login(LOOPER).await;
    assert_eq!(param(&first, "error").as_deref(), Some("server_error"));
    assert!(param(&first, "code").is_none());

    // Baseline latency of an ordinary login.
    let (normal, first) = login(PUBLIC_CLIENT).await;
    assert!(param(&first, "code").is_some());
    let mut baseline = Vec::new();
    for _ in 0..20 {
        let (t, p) = authorize_once(&s, &normal, PUBLIC_CLIENT).await;
        assert!(param(&p, "code").is_some());
        baseline.push(t);
    }

    // Load: more looping logins in flight than the blocking pool has threads, plus ordinary
    // logins of another client at the same time.
    let loopers = 12;
    let mut looper_tasks = Vec::new();
    for _ in 0..loopers {
        let (b, p) = login(LOOPER).await;
        assert_eq!(param(&p, "error").as_deref(), Some("server_error"));
        looper_tasks.push(b);
    }
    let s = std::sync::Arc::new(s);
    let mut handles = Vec::new();
    for b in looper_tasks {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..3 {
                let (t, p) = authorize_once(&s, &b, LOOPER).await;
                assert_eq!(param(&p, "error").as_deref(), Some("server_error"));
                assert_eq!(
                    param(&p, "error_description").as_deref(),
                    Some("the login could not be completed"),
                    "script internals never reach the browser"
                );
                assert!(param(&p, "code").is_none());
                out.push(t);
            }
            (true, out)
        }));
    }
    for _ in 0..2 {
        let (s, b) = (s.clone(), normal.clone());
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..15 {
                let (t, p) = authorize_once(&s, &b, PUBLIC_CLIENT).await;
                assert!(param(&p, "code").is_some(), "ordinary login failed: {p:?}");
                assert!(param(&p, "error").is_none());
                out.push(t);
            }
            (false, out)
        }));
    }
    let (mut looping, mut ordinary) = (Vec::new(), Vec::new());
    for h in handles {
        let (is_looper, times) = h.await.expect("task succeeded");
        if is_looper {
            looping.extend(times);
        } else {
            ordinary.extend(times);
        }
    }
    assert_eq!(looping.len(), loopers * 3);
    assert_eq!(ordinary.len(), 30);
    summary("ordinary logins, idle server", baseline);
    summary("ordinary logins, while looping rules run", ordinary);
    summary("looping logins (server_error)", looping);

    // Afterwards the pool is free again: an ordinary login still works.
    let (_, p) = authorize_once(&s, &normal, PUBLIC_CLIENT).await;
    assert!(param(&p, "code").is_some());
}

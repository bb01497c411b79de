//! Soak: the real `claimrules serve` binary under mixed load — full logins (login form, consent,
//! code exchange), refreshes and Hydra token-hook calls — while the rules folder changes every second and every tenth
//! change is a broken edit. Checks: zero 5xx, every token traceable to exactly one rule-set
//! version (the version is stamped twice, at both ends of one rule file written in place, so a
//! token from a half-read or half-applied file shows two different stamps or one missing), and
//! server RSS growth after warm-up.
//!
//! `SOAK_SECONDS` (default 30) sets the duration; `SOAK_WORKERS` (default 4) the concurrency.
//! Run with `cargo bench --bench soak`. Exits non-zero on a 5xx, an untraceable token, a load
//! that made no progress, or (runs of 60 s and more) RSS growth of 10 % or more after warm-up.

// The soak bench uses only part of the integration tests' helpers.
#[allow(dead_code)]
#[path = "../tests/it/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SCOPE: &str = "openid offline_access read:contacts";
const NS: &str = "https://example.com/";
const HYDRA_KEY: &str = "Bearer soak-hydra-secret-0123456789";

#[derive(Default)]
struct Stats {
    logins: AtomicU64,
    refreshes: AtomicU64,
    hook_calls: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    untraceable: AtomicU64,
    changes: AtomicU64,
    broken_edits: AtomicU64,
    /// Highest rule-set version written so far.
    written: AtomicU64,
    versions_seen: Mutex<std::collections::BTreeSet<u64>>,
    first_failure: Mutex<Option<String>>,
}

impl Stats {
    fn fail(&self, what: String) {
        let mut f = self.first_failure.lock().unwrap();
        if f.is_none() {
            *f = Some(what);
        }
    }
}

/// The versioned rule: a stamp at both ends with filler between, so a torn read is visible.
fn versioned_rule(version: u64) -> String {
    let mut s = format!("context.accessToken[\"{NS}v_head\"] = {version};\n");
    for i in 0..60 {
        s.push_str(&format!(
            "let filler_{i} = \"{}\"; if filler_{i}.len() == 0 {{ deny(\"never\"); }}\n",
            "x".repeat(40)
        ));
    }
    s.push_str(&format!(
        "context.accessToken[\"{NS}v_tail\"] = {version};\ncontext.idToken[\"{NS}v_tail\"] = {version};\n"
    ));
    s
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn start(dir: &Path, port: u16) -> (Child, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("claimrules.toml"))
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the claimrules binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reqwest::get(format!("{base}/.well-known/openid-configuration"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

/// Records an answer; `Some(body)` for a 200.
async fn answer(
    stats: &Stats,
    what: &str,
    res: reqwest::Result<reqwest::Response>,
) -> Option<Value> {
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            stats.transport_errors.fetch_add(1, Ordering::Relaxed);
            stats.fail(format!("{what}: transport error {e}"));
            return None;
        }
    };
    let status = res.status();
    if status.is_server_error() {
        stats.server_errors.fetch_add(1, Ordering::Relaxed);
        stats.fail(format!("{what}: {status}"));
        return None;
    }
    if status != 200 {
        stats.client_errors.fetch_add(1, Ordering::Relaxed);
        stats.fail(format!("{what}: {status}"));
        return None;
    }
    res.json().await.ok()
}

/// Checks a token response's version stamps; returns the refresh token.
fn trace(stats: &Stats, body: &Value) -> Option<String> {
    let at = payload(body["access_token"].as_str()?);
    let id = body["id_token"].as_str().map(payload);
    check_stamps(stats, &at, id.as_ref());
    body["refresh_token"].as_str().map(str::to_owned)
}

/// Both stamps of the access token claims (and the ID token's, when there is one) must name
/// one rule-set version that was written.
fn check_stamps(stats: &Stats, at: &Value, id: Option<&Value>) {
    let head = at[format!("{NS}v_head")].as_u64();
    let tail = at[format!("{NS}v_tail")].as_u64();
    let id_tail = id.map(|t| t[format!("{NS}v_tail")].as_u64());
    let written = stats.written.load(Ordering::SeqCst);
    match (head, tail) {
        (Some(h), Some(t)) if h == t && id_tail.is_none_or(|i| i == Some(h)) && h <= written => {
            stats.versions_seen.lock().unwrap().insert(h);
        }
        _ => {
            stats.untraceable.fetch_add(1, Ordering::Relaxed);
            stats.fail(format!(
                "untraceable token: head {head:?} tail {tail:?} id {id_tail:?} written {written}"
            ));
        }
    }
}

/// One Hydra token-hook call with the documented sample; a 200 answer's claims are traced.
async fn hydra_hook(stats: &Stats, http: &reqwest::Client, base: &str, body: &str) {
    let res = http
        .post(format!("{base}/hooks/hydra/token"))
        .header("authorization", HYDRA_KEY)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await;
    let Some(answer) = answer(stats, "hydra hook", res).await else {
        return;
    };
    stats.hook_calls.fetch_add(1, Ordering::Relaxed);
    let session = &answer["session"];
    check_stamps(stats, &session["access_token"], Some(&session["id_token"]));
}

/// One full login: authorize, login form, consent form, code exchange.
async fn login(stats: &Stats, base: &str) -> Option<String> {
    let b = browser();
    let url = format!(
        "{base}/authorize?{}",
        serde_urlencoded::to_string(authorize_params(SCOPE)).unwrap()
    );
    let page = b.get(&url).send().await;
    let html = match page {
        Ok(r) if r.status() == 200 => r.text().await.ok()?,
        other => {
            answer(stats, "authorize", other).await;
            return None;
        }
    };
    let res = b
        .post(format!("{base}/login"))
        .form(&[
            ("authz", hidden(&html, "authz")?.as_str()),
            ("csrf", hidden(&html, "csrf")?.as_str()),
            ("username", ALICE.0),
            ("password", ALICE.1),
        ])
        .send()
        .await;
    // The consent page the first time; afterwards the stored consent redirects at once.
    let res = match res {
        Ok(r) if r.status() == 200 => {
            let html = r.text().await.ok()?;
            b.post(format!("{base}/consent"))
                .form(&[
                    ("authz", hidden(&html, "authz")?.as_str()),
                    ("csrf", hidden(&html, "csrf")?.as_str()),
                    ("decision", "allow"),
                ])
                .send()
                .await
        }
        other => other,
    };
    let code = match res {
        Ok(r) if r.status() == 303 => param(&location_params(&r), "code"),
        other => {
            answer(stats, "consent", other).await;
            return None;
        }
    };
    let Some(code) = code else {
        stats.client_errors.fetch_add(1, Ordering::Relaxed);
        stats.fail("consent redirect without a code".into());
        return None;
    };
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
        .await;
    let body = answer(stats, "code exchange", res).await?;
    stats.logins.fetch_add(1, Ordering::Relaxed);
    trace(stats, &body)
}

async fn refresh_once(
    stats: &Stats,
    http: &reqwest::Client,
    base: &str,
    rt: &str,
) -> Option<String> {
    let res = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await;
    let body = answer(stats, "refresh", res).await?;
    stats.refreshes.fetch_add(1, Ordering::Relaxed);
    trace(stats, &body)
}

fn write_rules(dir: &Path, version: u64, broken: bool) {
    let path = dir.join("10-version.rhai");
    if broken {
        // A half-typed edit: the server must keep serving the last good set.
        std::fs::write(
            &path,
            format!("context.accessToken[\"{NS}v_head\"] = {version};\nlet = ;\n"),
        )
        .unwrap();
    } else {
        // In place (truncate + write), as many editors save.
        std::fs::write(&path, versioned_rule(version)).unwrap();
    }
}

fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let workers: usize = std::env::var("SOAK_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(soak(Duration::from_secs(seconds), workers));
    if !ok {
        std::process::exit(1);
    }
}

async fn soak(duration: Duration, workers: usize) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let rules: PathBuf = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    write_rules(&rules, 0, false);
    std::fs::write(
        rules.join("20-roles.rhai"),
        format!("context.accessToken[\"{NS}roles\"] = user.app_metadata.roles;\n"),
    )
    .unwrap();
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        Some(&rules),
        &format!("[hooks]\nhydra_api_key = \"{HYDRA_KEY}\"\n"),
    );
    let hydra_body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hooks/hydra_docs_sample.json"
    ))
    .unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "issuer = \"http://127.0.0.1:1/\"",
        &format!("issuer = \"http://127.0.0.1:{port}/\""),
    );
    std::fs::write(&cfg, text).unwrap();
    let (mut child, base) = start(dir.path(), port).await;
    let pid = child.id();
    let stats = Arc::new(Stats::default());
    let start_at = Instant::now();
    let end = start_at + duration;

    // Rule changes: one per second, every tenth broken.
    let changer = {
        let (stats, rules) = (stats.clone(), rules.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() + Duration::from_secs(1) < end {
                tokio::time::sleep(Duration::from_secs(1)).await;
                n += 1;
                let broken = n % 10 == 0;
                if !broken {
                    stats.written.store(n, Ordering::SeqCst);
                }
                write_rules(&rules, n, broken);
                stats.changes.fetch_add(1, Ordering::Relaxed);
                if broken {
                    stats.broken_edits.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // RSS samples, once a second.
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while Instant::now() < end {
            if let Some(r) = rss_kib(pid) {
                samples.push((start_at.elapsed(), r));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples
    });

    // Load: each worker alternates one full login with a few refreshes of its tokens.
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (stats, base, hydra_body) = (stats.clone(), base.clone(), hydra_body.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut held: Vec<String> = Vec::new();
            while Instant::now() < end {
                if let Some(rt) = login(&stats, &base).await {
                    held.push(rt);
                }
                for _ in 0..4 {
                    let Some(rt) = held.pop() else { break };
                    if let Some(next) = refresh_once(&stats, &http, &base, &rt).await {
                        held.insert(0, next);
                    }
                }
                held.truncate(8);
                for _ in 0..4 {
                    hydra_hook(&stats, &http, &base, &hydra_body).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    changer.await.unwrap();
    let samples = sampler.await.unwrap();
    let _ = child.kill();
    let _ = child.wait();

    let s = &stats;
    let secs = duration.as_secs_f64();
    let logins = s.logins.load(Ordering::Relaxed);
    let refreshes = s.refreshes.load(Ordering::Relaxed);
    let hooks = s.hook_calls.load(Ordering::Relaxed);
    let seen = s.versions_seen.lock().unwrap().clone();
    println!("soak: {secs:.0} s, {workers} workers, server pid {pid}");
    println!(
        "  logins (full flow) {logins} ({:.1}/s), refreshes {refreshes} ({:.1}/s), Hydra hook calls {hooks} ({:.1}/s)",
        logins as f64 / secs,
        refreshes as f64 / secs,
        hooks as f64 / secs
    );
    println!(
        "  rule changes {} (broken edits {}), distinct versions in tokens {} (last {:?})",
        s.changes.load(Ordering::Relaxed),
        s.broken_edits.load(Ordering::Relaxed),
        seen.len(),
        seen.iter().next_back()
    );
    println!(
        "  5xx {}, other non-200 {}, transport errors {}, untraceable tokens {}",
        s.server_errors.load(Ordering::Relaxed),
        s.client_errors.load(Ordering::Relaxed),
        s.transport_errors.load(Ordering::Relaxed),
        s.untraceable.load(Ordering::Relaxed)
    );
    // Warm-up: the first fifth of the run (at least 5 s). RSS swings with Argon2's 19 MiB
    // buffers, so growth compares means: the last tenth of the run against the first tenth
    // after warm-up. The mean of every tenth is printed to show whether memory plateaus.
    let warm = (duration / 5).max(Duration::from_secs(5));
    let after: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= warm)
        .map(|(_, r)| *r)
        .collect();
    let mut rss_growth = None;
    if after.len() >= 10 {
        let n = after.len() / 10;
        let mean = |xs: &[u64]| xs.iter().sum::<u64>() as f64 / xs.len().max(1) as f64;
        let tenths: Vec<f64> = (0..10)
            .map(|i| mean(&after[i * n..if i == 9 { after.len() } else { (i + 1) * n }]))
            .collect();
        let growth = (tenths[9] - tenths[0]) / tenths[0] * 100.0;
        rss_growth = Some(growth);
        println!(
            "  RSS KiB: start {}, peak {}, mean per tenth after warm-up {:?}",
            samples.first().map(|x| x.1).unwrap_or(0),
            samples.iter().map(|x| x.1).max().unwrap_or(0),
            tenths.iter().map(|t| *t as u64).collect::<Vec<_>>()
        );
        println!("  RSS growth after warm-up (last tenth vs first tenth): {growth:.1} %");
    }
    if let Some(f) = s.first_failure.lock().unwrap().as_ref() {
        println!("  first failure: {f}");
    }
    let mut ok = s.server_errors.load(Ordering::Relaxed) == 0
        && s.untraceable.load(Ordering::Relaxed) == 0
        && s.transport_errors.load(Ordering::Relaxed) == 0
        && s.client_errors.load(Ordering::Relaxed) == 0
        && logins > 0
        && refreshes > 0
        && hooks > 0;
    if duration >= Duration::from_secs(60) {
        ok &= rss_growth.is_some_and(|g| g < 10.0);
        ok &= seen.len() as u64 >= s.changes.load(Ordering::Relaxed) / 2;
    }
    println!("soak: {}", if ok { "PASS" } else { "FAIL" });
    ok
}

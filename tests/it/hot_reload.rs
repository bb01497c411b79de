//! Hot reload of a rules folder under a running `HotRules`: edits (in place and by
//! save-by-rename), added, renamed and deleted rules, `rules.toml` changes and broken edits
//! (the last good set keeps serving), no lost updates, atomic swaps under concurrent runs, and
//! `GET /rules/status`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use claimrules::rules::RuleSet;
use claimrules::rules::{HotRules, RulesStatus};
use claimrules::server::hooks;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

/// Bounded wait for every poll in this file.
const WAIT: Duration = Duration::from_secs(5);

fn rule(claim: &str, value: &str) -> String {
    format!("context.accessToken[\"https://example.com/{claim}\"] = {value};\n")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Writes a temporary file and renames it over `name`, as many editors save.
fn save_by_rename(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp~"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The access-token claims the serving rule set produces for a fixed user.
fn claims(hot: &HotRules) -> Map<String, Value> {
    let loaded = hot.current();
    loaded
        .set
        .run(json!({"user_id": "auth0|1"}), json!({"clientID": "app"}))
        .unwrap()
        .access_token
}

/// Polls until the serving rules produce `expected`, failing after `WAIT`.
fn wait_for_claims(hot: &HotRules, expected: Value) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = Value::Object(claims(hot));
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rules never produced {expected}; last output {got}, status {:?}",
            hot.status()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn watched(dir: &Path) -> HotRules {
    let hot = HotRules::load(dir, Default::default()).unwrap();
    hot.watch().unwrap();
    assert!(hot.is_watching());
    hot
}

async fn wait_status(hot: &HotRules, pred: impl FnMut(&RulesStatus) -> bool) -> RulesStatus {
    match hot.wait_for(WAIT, pred).await {
        Ok(s) => s,
        Err(e) => panic!("{e}; status {:?}", hot.status()),
    }
}

#[tokio::test]
async fn an_edit_in_place_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.rhai", &rule("v", "1"));
    let hot = watched(dir.path());
    wait_for_claims(&hot, json!({"https://example.com/v": 1}));
    write(dir.path(), "10-a.rhai", &rule("v", "2"));
    wait_for_claims(&hot, json!({"https://example.com/v": 2}));
    assert_eq!(hot.status().version, 2);
    assert_eq!(hot.status().last_error, None);
}

#[tokio::test]
async fn editor_save_by_rename_takes_effect_repeatedly() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.rhai", &rule("v", "1"));
    let hot = watched(dir.path());
    // The watched inode is replaced each time: the folder watch must keep seeing the file.
    for v in 2..=4 {
        save_by_rename(dir.path(), "10-a.rhai", &rule("v", &v.to_string()));
        wait_for_claims(&hot, json!({"https://example.com/v": v}));
    }
    // Vim's way: move the original to a backup, write a new file, delete the backup.
    std::fs::rename(dir.path().join("10-a.rhai"), dir.path().join("10-a.rhai~")).unwrap();
    write(dir.path(), "10-a.rhai", &rule("v", "5"));
    std::fs::remove_file(dir.path().join("10-a.rhai~")).unwrap();
    wait_for_claims(&hot, json!({"https://example.com/v": 5}));
}

#[tokio::test]
async fn added_renamed_and_deleted_rules_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.rhai", &rule("a", "1"));
    let hot = watched(dir.path());

    write(dir.path(), "20-b.rhai", &rule("b", "1"));
    wait_for_claims(
        &hot,
        json!({"https://example.com/a": 1, "https://example.com/b": 1}),
    );
    assert_eq!(hot.status().rules, vec!["10-a", "20-b"]);

    // Renamed before 10-a: now it runs first and 10-a overwrites the shared claim.
    write(
        dir.path(),
        "20-b.rhai",
        &(rule("b", "1") + rule("a", "0").as_str()),
    );
    wait_for_claims(
        &hot,
        json!({"https://example.com/a": 0, "https://example.com/b": 1}),
    );
    std::fs::rename(dir.path().join("20-b.rhai"), dir.path().join("05-b.rhai")).unwrap();
    wait_for_claims(
        &hot,
        json!({"https://example.com/a": 1, "https://example.com/b": 1}),
    );
    assert_eq!(hot.status().rules, vec!["05-b", "10-a"]);

    std::fs::remove_file(dir.path().join("05-b.rhai")).unwrap();
    wait_for_claims(&hot, json!({"https://example.com/a": 1}));
    assert_eq!(hot.status().rules, vec!["10-a"]);
}

#[tokio::test]
async fn a_broken_edit_keeps_the_last_good_set_and_reports_where() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.rhai", &rule("v", "1"));
    let hot = watched(dir.path());
    let before = hot.status();

    write(dir.path(), "10-a.rhai", "let x = ;\n");
    let status = wait_status(&hot, |s| s.last_error.is_some()).await;
    let err = status.last_error.clone().unwrap();
    let path = dir.path().join("10-a.rhai");
    assert!(
        err.starts_with(&format!("{}:1:9:", path.display())),
        "error must name file, line and column: {err}"
    );
    // Still the old set, with its old behaviour.
    assert_eq!(status.version, before.version);
    assert_eq!(
        Value::Object(claims(&hot)),
        json!({"https://example.com/v": 1})
    );

    // A broken second file fails the whole set too (written first, so no reload can see the
    // new 10-a without it).
    write(
        dir.path(),
        "20-b.rhai",
        "context.accessToken[\"x\"] = undefined_variable;\n",
    );
    write(dir.path(), "10-a.rhai", &rule("v", "2"));
    let status = wait_status(&hot, |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("20-b.rhai:1:"))
    })
    .await;
    assert_eq!(status.version, before.version);
    assert_eq!(
        Value::Object(claims(&hot)),
        json!({"https://example.com/v": 1})
    );

    // Fixing it loads the new set and clears the error.
    std::fs::remove_file(dir.path().join("20-b.rhai")).unwrap();
    wait_for_claims(&hot, json!({"https://example.com/v": 2}));
    let status = wait_status(&hot, |s| s.last_error.is_none()).await;
    assert_eq!(status.version, before.version + 1);
}

#[tokio::test]
async fn rules_toml_changes_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "first.rhai",
        &rule("first", "configuration.LEVEL"),
    );
    write(dir.path(), "second.rhai", &rule("second", "true"));
    let manifest = |level: u32, second_enabled: bool| {
        format!(
            "[configuration]\nLEVEL = {level}\n\n[[rule]]\nname = \"first\"\n\n[[rule]]\nname = \"second\"\nenabled = {second_enabled}\n"
        )
    };
    write(dir.path(), "rules.toml", &manifest(1, true));
    let hot = watched(dir.path());
    wait_for_claims(
        &hot,
        json!({"https://example.com/first": 1, "https://example.com/second": true}),
    );

    write(dir.path(), "rules.toml", &manifest(2, false));
    wait_for_claims(&hot, json!({"https://example.com/first": 2}));

    // An invalid manifest keeps the last good set.
    write(
        dir.path(),
        "rules.toml",
        "[[rule]]\nname = \"first\"\nsurprise = 1\n",
    );
    let status = wait_status(&hot, |s| s.last_error.is_some()).await;
    assert!(status.last_error.unwrap().contains("rules.toml"));
    assert_eq!(
        Value::Object(claims(&hot)),
        json!({"https://example.com/first": 2})
    );

    // Removing the manifest falls back to file-name order with an empty configuration.
    std::fs::remove_file(dir.path().join("rules.toml")).unwrap();
    wait_for_claims(&hot, json!({"https://example.com/second": true}));
    assert_eq!(hot.status().rules, vec!["first", "second"]);
}

#[tokio::test]
async fn rapid_edits_end_on_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.rhai", &rule("v", "0"));
    let hot = watched(dir.path());
    // Edits land while earlier ones are still being debounced or reloaded: the last must win.
    for v in 1..=30 {
        write(dir.path(), "10-a.rhai", &rule("v", &v.to_string()));
        if v % 10 == 0 {
            std::thread::yield_now();
        }
    }
    wait_for_claims(&hot, json!({"https://example.com/v": 30}));
}

#[tokio::test]
async fn an_unchanged_folder_does_not_bump_the_version() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.rhai", &rule("v", "1"));
    let hot = watched(dir.path());
    let before = hot.status();
    // Same bytes rewritten, and an unrelated file: attempts happen, the version stays.
    write(dir.path(), "10-a.rhai", &rule("v", "1"));
    write(dir.path(), "notes.txt", "not a rule");
    let status = wait_status(&hot, |s| s.attempts > before.attempts).await;
    assert_eq!(status.version, before.version);
    assert_eq!(status.last_error, None);
    // A reload asked for directly (SIGHUP) reports the serving version.
    assert_eq!(hot.reload().unwrap(), before.version);
}

#[tokio::test]
async fn unwatch_stops_following_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.rhai", &rule("v", "1"));
    let hot = watched(dir.path());
    hot.unwatch();
    assert!(!hot.is_watching());
    write(dir.path(), "10-a.rhai", &rule("v", "2"));
    // Without the watcher only an explicit reload picks the change up.
    assert_eq!(hot.reload().unwrap(), 2);
    assert_eq!(
        Value::Object(claims(&hot)),
        json!({"https://example.com/v": 2})
    );
}

fn version_set(tag: &str) -> RuleSet {
    // Two rules, the second depending on the first: a run that mixed versions would show it.
    RuleSet::from_sources(
        vec![
            (
                "first".into(),
                format!("context.accessToken[\"https://example.com/first\"] = \"{tag}\";"),
            ),
            (
                "second".into(),
                format!(
                    "context.accessToken[\"https://example.com/second\"] = context.accessToken[\"https://example.com/first\"] + \"-{tag}\";"
                ),
            ),
        ],
        json!({}),
        Default::default(),
    )
    .unwrap()
}

const SWAPS: usize = 100;

#[test]
fn concurrent_runs_each_see_exactly_one_version() {
    let user = json!({"user_id": "auth0|1"});
    let ctx = json!({"clientID": "app"});
    let expected_a = version_set("A").run(user.clone(), ctx.clone()).unwrap();
    let expected_b = version_set("B").run(user.clone(), ctx.clone()).unwrap();
    assert_ne!(expected_a, expected_b);

    let hot = HotRules::fixed(version_set("A"));
    // Compiled up front so the swap loop only swaps.
    let swaps: Vec<RuleSet> = (0..SWAPS)
        .map(|i| version_set(if i % 2 == 0 { "B" } else { "A" }))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let seen_a = Arc::new(AtomicUsize::new(0));
    let seen_b = Arc::new(AtomicUsize::new(0));
    let runners: Vec<_> = (0..4)
        .map(|_| {
            let (hot, stop) = (hot.clone(), stop.clone());
            let (seen_a, seen_b) = (seen_a.clone(), seen_b.clone());
            let (user, ctx) = (user.clone(), ctx.clone());
            let (ea, eb) = (expected_a.clone(), expected_b.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let loaded = hot.current();
                    let out = loaded
                        .set
                        .run(user.clone(), ctx.clone())
                        .expect("no run may fail during swaps");
                    if out == ea {
                        seen_a.fetch_add(1, Ordering::Relaxed);
                    } else if out == eb {
                        seen_b.fetch_add(1, Ordering::Relaxed);
                    } else {
                        panic!("outcome matches neither version: {out:?}");
                    }
                }
            })
        })
        .collect();

    // Swap back and forth, pacing the swaps on the runners' progress so both versions serve.
    let mut version = 1;
    for set in swaps {
        let done = seen_a.load(Ordering::Relaxed) + seen_b.load(Ordering::Relaxed);
        let deadline = Instant::now() + WAIT;
        while seen_a.load(Ordering::Relaxed) + seen_b.load(Ordering::Relaxed) < done + 2 {
            assert!(Instant::now() < deadline, "runners stalled");
            std::thread::yield_now();
        }
        version = hot.replace(set);
    }
    stop.store(true, Ordering::Relaxed);
    for r in runners {
        r.join().expect("a runner failed");
    }
    assert_eq!(version, SWAPS as u64 + 1);
    assert!(seen_a.load(Ordering::Relaxed) > 0 && seen_b.load(Ordering::Relaxed) > 0);
}

#[test]
fn concurrent_runs_during_folder_reloads_see_exactly_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let write_version = |tag: &str| {
        write(
            dir.path(),
            "10-first.rhai",
            &rule("first", &format!("\"{tag}\"")),
        );
        write(
            dir.path(),
            "20-second.rhai",
            &rule(
                "second",
                &format!("context.accessToken[\"https://example.com/first\"] + \"-{tag}\""),
            ),
        );
    };
    write_version("A");
    let hot = HotRules::load(dir.path(), Default::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let a = json!({"https://example.com/first": "A", "https://example.com/second": "A-A"});
    let b = json!({"https://example.com/first": "B", "https://example.com/second": "B-B"});
    let runners: Vec<_> = (0..4)
        .map(|_| {
            let (hot, stop, a, b) = (hot.clone(), stop.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut runs = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let got = Value::Object(claims(&hot));
                    assert!(got == a || got == b, "mixed outcome {got}");
                    runs += 1;
                }
                runs
            })
        })
        .collect();
    // No watcher here: each reload runs after both files are rewritten, so every set is whole.
    for i in 0..50 {
        let tag = if i % 2 == 0 { "B" } else { "A" };
        write_version(tag);
        hot.reload().unwrap();
        let expected = if tag == "A" { &a } else { &b };
        assert_eq!(&Value::Object(claims(&hot)), expected);
    }
    stop.store(true, Ordering::Relaxed);
    for r in runners {
        assert!(r.join().expect("a runner failed") > 0);
    }
}

async fn get_status(
    hot: &HotRules,
    token: Option<&str>,
    header: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::get("/rules/status");
    if let Some(h) = header {
        req = req.header("authorization", h);
    }
    let resp = hooks::status_router(hot.clone(), token.map(str::to_owned))
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn rules_status_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.rhai", &rule("v", "1"));
    let hot = HotRules::load(dir.path(), Default::default()).unwrap();
    write(dir.path(), "10-a.rhai", "let = ;");
    assert!(hot.reload().is_err());

    // No admin token configured: the endpoint does not exist.
    let (status, _) = get_status(&hot, None, Some("Bearer anything")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for header in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret"),
        Some("s3cret"),
    ] {
        let (status, _) = get_status(&hot, Some("s3cret"), header).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?}");
    }
    let (status, body) = get_status(&hot, Some("s3cret"), Some("Bearer s3cret")).await;
    assert_eq!(status, StatusCode::OK);
    let mut body: Value = serde_json::from_str(&body).unwrap();
    let loaded_at = body.as_object_mut().unwrap().remove("loaded_at").unwrap();
    assert!(loaded_at.as_u64().unwrap() > 1_700_000_000);
    let error = format!(
        "{}:1:5: Expecting name of a variable",
        dir.path().join("10-a.rhai").display()
    );
    assert_eq!(
        body,
        json!({"version": 1, "rules": ["10-a"], "last_error": error, "attempts": 1})
    );
}

#[tokio::test]
async fn the_token_hooks_follow_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.rhai", &rule("v", "1"));
    let hot = watched(dir.path());
    let cfg = hooks::HooksConfig {
        hydra_api_key: Some("k".into()),
        ..hooks::HooksConfig::default()
    };
    let body = json!({"session": {"id_token": {"subject": "u"}}, "request": {"client_id": "c", "grant_types": ["authorization_code"]}});
    let call = || async {
        let req = Request::post("/hooks/hydra/token")
            .header("authorization", "k")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = hooks::router(hot.clone(), cfg.clone())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["session"]["access_token"].clone()
    };
    assert_eq!(call().await, json!({"https://example.com/v": 1}));
    save_by_rename(dir.path(), "10-a.rhai", &rule("v", "2"));
    wait_status(&hot, |s| s.version == 2).await;
    assert_eq!(call().await, json!({"https://example.com/v": 2}));
}

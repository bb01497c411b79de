//! Metadata that persists: `update_app_metadata` / `update_user_metadata` merge into the user
//! for later rules, are reported for the host, survive a denial but not a rule error, and the
//! token server stores them so the next login of the user — after a restart, on another
//! instance, on SQLite and on PostgreSQL — starts with them.

use std::path::Path;

use claimrules::rules::{MetadataUpdates, RuleError, RuleSet, RunOptions};
use serde_json::{json, Value};

use crate::common::{self, fresh_postgres_schema, TestServer, ALICE, BOB};

fn set(rules: &[(&str, &str)]) -> RuleSet {
    RuleSet::from_sources(
        rules
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect(),
        json!({}),
        Default::default(),
    )
    .unwrap()
}

fn alice() -> Value {
    json!({"user_id": "auth0|alice", "app_metadata": {"plan": "pro", "old": 1}, "user_metadata": {}})
}

/// `RuleSet::run_borrowed` (what the issuer calls, to spare a copy of the user per request):
/// the rules change their own copy, the caller's user stays as it was, and the outcome,
/// metadata updates included, is the one `run_with` gives for the same user.
#[test]
fn a_borrowed_user_is_left_as_it_was_and_the_outcome_is_run_withs() {
    let s = set(&[(
        "a",
        r#"user.app_metadata.plan = "enterprise"; user.nickname = "al";
        update_app_metadata(#{ roles: ["admin"] });
        context.accessToken["https://example.com/plan"] = user.app_metadata.plan;"#,
    )]);
    let given = alice();
    let borrowed = s.run_borrowed(&given, json!({}), &RunOptions::default());
    assert_eq!(given, alice(), "the caller's user is untouched");
    let owned = s.run_with(alice(), json!({}), &RunOptions::default());
    let (b, o) = (borrowed.result.unwrap(), owned.result.unwrap());
    assert_eq!(b.user["app_metadata"]["plan"], json!("enterprise"));
    assert_eq!(b.user["nickname"], json!("al"));
    assert_eq!(b.user, o.user);
    assert_eq!(b.access_token, o.access_token);
    assert_eq!(borrowed.metadata, owned.metadata);
    assert!(!borrowed.metadata.is_empty());
}

#[test]
fn updates_merge_for_later_rules_and_are_reported() {
    let s = set(&[
        (
            "a",
            r#"update_app_metadata(#{ roles: ["admin"], old: () }); update_user_metadata(#{ theme: "dark" });
            context.accessToken["https://example.com/same-rule"] = user.app_metadata.roles;"#,
        ),
        (
            "b",
            r#"
            context.idToken["https://example.com/roles"] = user.app_metadata.roles;
            context.idToken["https://example.com/plan"] = user.app_metadata.plan;
            context.idToken["https://example.com/old"] = user.app_metadata.old;
            context.idToken["https://example.com/theme"] = user.user_metadata.theme;
            update_app_metadata(#{ roles: ["admin", "editor"] });
            "#,
        ),
    ]);
    let out = s.run(alice(), json!({})).unwrap();
    assert_eq!(out.id_token["https://example.com/roles"], json!(["admin"]));
    assert_eq!(
        out.access_token["https://example.com/same-rule"],
        json!(["admin"]),
        "the updating rule itself sees the update"
    );
    assert_eq!(out.id_token["https://example.com/plan"], json!("pro"));
    assert_eq!(out.id_token["https://example.com/theme"], json!("dark"));
    assert!(
        !out.id_token.contains_key("https://example.com/old"),
        "a () value removes the key"
    );
    let app = out.metadata.app_metadata.clone().unwrap();
    assert_eq!(
        app["roles"],
        json!(["admin", "editor"]),
        "later updates win"
    );
    assert_eq!(
        app["old"],
        Value::Null,
        "the removal is reported for the host"
    );
    assert_eq!(out.metadata.user_metadata.unwrap()["theme"], json!("dark"));
    assert_eq!(
        out.user["app_metadata"]["roles"],
        json!(["admin", "editor"])
    );
}

#[test]
fn a_denial_keeps_the_updates_made_before_it_and_an_error_drops_them() {
    let denied = set(&[
        ("count", r#"update_app_metadata(#{ refused: 1 });"#),
        ("deny", r#"deny("no");"#),
    ]);
    let trace = denied.run_with(alice(), json!({}), &RunOptions::default());
    assert!(matches!(trace.result, Err(RuleError::Denied { .. })));
    assert_eq!(trace.metadata.app_metadata.unwrap()["refused"], json!(1));

    for failing in [
        "let x = 1 + \"a\" * 2;",
        "loop {}",
        "throw_me_not();",
        "update_app_metadata(\"not a map\");",
    ] {
        let s = set(&[
            ("count", r#"update_app_metadata(#{ refused: 1 });"#),
            ("fail", failing),
        ]);
        let trace = s.run_with(alice(), json!({}), &RunOptions::default());
        assert!(
            // `loop {}` ends on the operation budget or, on a loaded machine, the time budget.
            matches!(
                trace.result,
                Err(RuleError::Script { .. } | RuleError::Timeout { .. })
            ),
            "{failing}: {:?}",
            trace.result
        );
        assert_eq!(trace.metadata, MetadataUpdates::default(), "{failing}");
    }
}

#[test]
fn an_update_that_is_not_a_map_or_too_large_is_a_rule_error() {
    for (src, want) in [
        ("update_app_metadata(42);", "expects a map, got i64"),
        ("update_user_metadata([1, 2]);", "expects a map, got array"),
        ("update_app_metadata(#{ f: || 1 });", "has no JSON form"),
        (
            r#"let big = "x"; while big.len() < 20000 { big += big; } update_app_metadata(#{ big: big });"#,
            "over the limit of 16384",
        ),
    ] {
        let err = set(&[("r", src)]).run(alice(), json!({})).unwrap_err();
        match &err {
            RuleError::Script { message, line, .. } => {
                assert!(message.contains(want), "{src}: {message}");
                assert!(*line > 0, "{src}: the error names the line");
            }
            other => panic!("{src}: {other:?}"),
        }
    }
    // Many small updates that add up past the cap are refused too.
    let err = set(&[(
        "r",
        r#"let v = ""; v.pad(500, 'y'); for i in 0..40 { let m = #{}; m["k" + i] = v; update_app_metadata(m); }"#,
    )])
    .run(alice(), json!({}))
    .unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
    // A caught error leaves the run going without the refused update.
    let out = set(&[(
        "r",
        r#"try { update_app_metadata(1); } catch (e) { context.idToken["https://example.com/e"] = e; }"#,
    )])
    .run(alice(), json!({}))
    .unwrap();
    assert!(out.id_token["https://example.com/e"]
        .as_str()
        .unwrap()
        .starts_with("update_app_metadata:"));
    assert!(out.metadata.is_empty());
}

/// A rules folder whose rule counts logins in `app_metadata`, refuses unverified users after
/// counting the attempt, and shows the count in the ID token.
fn counting_rules(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("10-count.rhai"),
        r#"
        let n = user.app_metadata.counted ?? 0;
        update_app_metadata(#{ counted: n + 1 });
        update_user_metadata(#{ seen: true });
        if user.email_verified == false {
            deny("verify your email first");
        }
        context.idToken["https://example.com/counted"] = user.app_metadata.counted;
        context.idToken["https://example.com/plan"] = user.app_metadata.plan;
        "#,
    )
    .unwrap();
    rules
}

/// A server on a fresh folder with [`counting_rules`].
async fn counting_server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let rules = counting_rules(dir.path());
    common::write_config(dir.path(), Some(&rules), "");
    let server = TestServer::start(dir.path()).await;
    (dir, server)
}

/// Alice's login with `scope`: the token response.
async fn alice_login(server: &TestServer, scope: &str) -> Value {
    let code = common::get_code(server, scope, ALICE).await;
    let res = common::exchange(server, &code).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn counted(server: &TestServer) -> Value {
    let body = alice_login(server, "openid profile").await;
    let claims = common::payload(body["id_token"].as_str().unwrap());
    assert_eq!(
        claims["https://example.com/plan"],
        json!("pro"),
        "config metadata stays"
    );
    claims["https://example.com/counted"].clone()
}

async fn denied_login(server: &TestServer) {
    let client = common::browser();
    let res =
        common::login_and_consent(server, &client, &common::authorize_params("openid"), BOB).await;
    let p = common::location_params(&res);
    assert_eq!(common::param(&p, "error").as_deref(), Some("access_denied"));
}

#[tokio::test]
async fn the_next_login_starts_with_the_stored_metadata_sqlite_and_after_a_restart() {
    let (dir, server) = counting_server().await;
    assert_eq!(counted(&server).await, json!(1));
    assert_eq!(counted(&server).await, json!(2));
    denied_login(&server).await;
    denied_login(&server).await;
    let bob = server
        .state
        .store
        .user_metadata("auth0|bob")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bob.app_metadata.unwrap()["counted"],
        json!(2),
        "updates made before a denial are stored"
    );
    server.stop();

    let server = TestServer::start(dir.path()).await;
    assert_eq!(
        counted(&server).await,
        json!(3),
        "the count survives a restart"
    );
    let alice = server
        .state
        .store
        .user_metadata("auth0|alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.user_metadata.unwrap()["seen"], json!(true));
    server.stop();
}

/// A refresh runs the rules with the metadata stored so far (at login and by earlier refreshes,
/// read with the refresh token's grant), and what it stores reaches the next refresh.
#[tokio::test]
async fn a_refresh_starts_with_the_metadata_stored_at_login_and_by_earlier_refreshes() {
    let (_dir, server) = counting_server().await;
    let mut body = alice_login(&server, "openid offline_access").await;
    let counted = |body: &Value| {
        common::payload(body["id_token"].as_str().unwrap())["https://example.com/counted"].clone()
    };
    assert_eq!(counted(&body), json!(1));
    for expected in 2..=4 {
        let token = body["refresh_token"].as_str().unwrap().to_string();
        let res = common::refresh(&server, &token).await;
        assert_eq!(res.status(), 200);
        body = res.json().await.unwrap();
        assert_eq!(counted(&body), json!(expected), "refresh {expected}");
    }
    server.stop();
}

#[tokio::test]
async fn the_next_login_starts_with_the_stored_metadata_on_another_postgres_instance() {
    let db = fresh_postgres_schema("cr_meta").await;
    let extra = format!("database_url = \"{db}\"");
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rules = counting_rules(da.path());
    common::write_config(da.path(), Some(&rules), &extra);
    common::write_config(db_dir.path(), Some(&rules), &extra);
    let a = TestServer::start(da.path()).await;
    let b = TestServer::start(db_dir.path()).await;
    assert_eq!(counted(&a).await, json!(1));
    assert_eq!(counted(&b).await, json!(2), "instance B sees what A stored");
    assert_eq!(counted(&a).await, json!(3));
    denied_login(&b).await;
    let bob = a
        .state
        .store
        .user_metadata("auth0|bob")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob.app_metadata.unwrap()["counted"], json!(1));
    a.stop();
    b.stop();
}

#[tokio::test]
async fn concurrent_updates_of_one_user_all_land() {
    let dir = tempfile::tempdir().unwrap();
    common::write_config(dir.path(), None, "");
    let server = TestServer::start(dir.path()).await;
    let store = server.state.store.clone();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut m = serde_json::Map::new();
            m.insert(format!("k{i}"), json!(i));
            store
                .update_user_metadata(
                    "auth0|alice",
                    &MetadataUpdates {
                        app_metadata: Some(m),
                        user_metadata: None,
                    },
                )
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored = store.user_metadata("auth0|alice").await.unwrap().unwrap();
    assert_eq!(stored.app_metadata.unwrap().len(), 20, "no update lost");
    server.stop();
}

//! The served router includes the token hooks and the rules status next to the OAuth endpoints,
//! and hot reload reaches the token endpoint.

use crate::common;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_hooks_are_served_beside_the_token_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        None,
        "admin_token = \"admin-0123456789\"\n[hooks]\ninsecure_loopback = true",
    );
    let s = TestServer::start(dir.path()).await;
    let http = reqwest::Client::new();
    let denied = http.get(s.url("/rules/status")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let ok = http
        .get(s.url("/rules/status"))
        .bearer_auth("admin-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let status: Value = ok.json().await.unwrap();
    assert_eq!(status["version"], 1);
    assert_eq!(status["rules"][0], "10-add-roles");

    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hooks/hydra_docs_sample.json"
    ))
    .unwrap();
    let res = http
        .post(s.url("/hooks/hydra/token"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        res.status() == 200 || res.status() == 204,
        "hydra hook served: {}",
        res.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_edit_changes_the_next_token() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("10-a.rhai"),
        r#"context.accessToken["https://example.com/v"] = 1;"#,
    )
    .unwrap();
    write_config(dir.path(), Some(&rules), "");
    let s = TestServer::start(dir.path()).await;
    let hot = s.state.issuer.rules().clone();
    hot.watch().unwrap();
    let code = get_code(&s, "openid read:contacts", ALICE).await;
    let body: Value = exchange(&s, &code).await.json().await.unwrap();
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["https://example.com/v"],
        1
    );
    std::fs::write(
        rules.join("10-a.rhai"),
        r#"context.accessToken["https://example.com/v"] = 2;"#,
    )
    .unwrap();
    hot.wait_for(std::time::Duration::from_secs(5), |st| st.version >= 2)
        .await
        .unwrap();
    // A broken edit keeps version 2 serving.
    std::fs::write(rules.join("10-a.rhai"), "let x = ;").unwrap();
    hot.wait_for(std::time::Duration::from_secs(5), |st| {
        st.last_error.is_some()
    })
    .await
    .unwrap();
    let code = get_code(&s, "openid read:contacts", ALICE).await;
    let body: Value = exchange(&s, &code).await.json().await.unwrap();
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["https://example.com/v"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_under_the_issuers_own_host_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("10-a.rhai"),
        r#"context.accessToken["http://127.0.0.1/role"] = "root";
           context.accessToken["https://example.com/ok"] = true;"#,
    )
    .unwrap();
    write_config(dir.path(), Some(&rules), "");
    let s = TestServer::start(dir.path()).await;
    let code = get_code(&s, "openid read:contacts", ALICE).await;
    let body: Value = exchange(&s, &code).await.json().await.unwrap();
    let at = payload(body["access_token"].as_str().unwrap());
    assert_eq!(at["https://example.com/ok"], true);
    assert!(
        at.get("http://127.0.0.1/role").is_none(),
        "issuer host is reserved: {at}"
    );
}

//! examples/embed_axum.rs as a real process, with a copy of the sample rules: the sample scope
//! rule narrows an editor's scope (login and refresh), a denial is an OAuth error, and a rule
//! edit reaches the next token.

use std::path::Path;
use std::time::{Duration, Instant};

use claimrules::{verify, Jwks, VerifyOptions};
use serde_json::{json, Value};

use crate::embedding::{post_form, start_with, Example};

const AUDIENCE: &str = "https://api.example.com";

/// Copies the repository's sample rules (not their tests) into `to`.
fn copy_sample_rules(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

fn start_on(rules: &Path) -> Example {
    start_with("embed_axum", &["--rules", rules.to_str().unwrap()], &[])
}

async fn password_grant(
    ex: &Example,
    client: (&str, Option<&str>),
    user: &str,
    scope: &str,
) -> (u16, Value) {
    let password = format!("{user}-password");
    let mut form = vec![
        ("grant_type", "password"),
        ("client_id", client.0),
        ("username", user),
        ("password", password.as_str()),
        ("audience", AUDIENCE),
        ("scope", scope),
    ];
    if let Some(secret) = client.1 {
        form.push(("client_secret", secret));
    }
    post_form(&format!("{}/oauth/token", ex.base), &form).await
}

async fn jwks(ex: &Example) -> Jwks {
    let doc: Value = reqwest::get(format!("{}/.well-known/jwks.json", ex.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Jwks::from_value(&doc).expect("the example serves a JWKS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_scope_rule_narrows_an_editors_scope_at_login_and_refresh() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample_rules(dir.path());
    let ex = start_on(dir.path());
    let keys = jwks(&ex).await;
    let issuer = format!("{}/", ex.base);
    let scope = "openid offline_access read:contacts write:contacts";

    let (status, body) = password_grant(&ex, ("demo-cli", None), "eddie", scope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "openid offline_access read:contacts");
    let claims = verify(
        body["access_token"].as_str().unwrap(),
        &keys,
        &VerifyOptions::new(&issuer, AUDIENCE).require_scope("read:contacts"),
    )
    .expect("the token verifies");
    assert_eq!(claims["scope"], "openid offline_access read:contacts");
    assert_eq!(claims["aud"], AUDIENCE, "no userinfo audience");
    assert_eq!(claims["https://example.com/roles"], json!(["editor"]));
    assert_eq!(claims["https://example.com/plan"], "free");

    // The refresh keeps the narrowed scope, and 50-protocol sees the refresh.
    let refresh = body["refresh_token"]
        .as_str()
        .expect("offline_access")
        .to_owned();
    let (status, body) = post_form(
        &format!("{}/oauth/token", ex.base),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "demo-cli"),
            ("refresh_token", refresh.as_str()),
            ("audience", AUDIENCE),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "openid offline_access read:contacts");
    let claims = verify(
        body["access_token"].as_str().unwrap(),
        &keys,
        &VerifyOptions::new(&issuer, AUDIENCE),
    )
    .unwrap();
    assert_eq!(claims["https://example.com/refreshed"], true);

    // An admin keeps every requested scope.
    let (status, body) = password_grant(&ex, ("demo-cli", None), "ada", scope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], scope);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_is_an_oauth_error_with_the_rules_message() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample_rules(dir.path());
    let ex = start_on(dir.path());
    // 30-require-verified-email denies unverified emails at VERIFIED_EMAIL_CLIENT = demo-app.
    let app = ("demo-app", Some("demo-app-secret"));
    let (status, body) = password_grant(&ex, app, "eve", "openid").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        json!({"error": "invalid_grant",
               "error_description": "Please verify your email before logging in."})
    );
    // The same user at another client, and the wrong secret, for contrast.
    let (status, body) = password_grant(&ex, ("demo-cli", None), "eve", "openid").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = password_grant(&ex, ("demo-app", Some("wrong")), "eve", "openid").await;
    assert_eq!((status, &body["error"]), (401, &json!("invalid_client")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_edit_reaches_the_next_token() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample_rules(dir.path());
    let ex = start_on(dir.path());
    let keys = jwks(&ex).await;
    let issuer = format!("{}/", ex.base);
    let tier = |body: &Value| {
        let claims = verify(
            body["access_token"].as_str().unwrap(),
            &keys,
            &VerifyOptions::new(&issuer, AUDIENCE),
        )
        .unwrap();
        claims.get("https://example.com/tier").cloned()
    };
    let (status, body) = password_grant(&ex, ("demo-cli", None), "eddie", "openid").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(tier(&body), None);

    // The client's metadata becomes a claim: an edit of a listed rule, saved in place.
    let rule = dir.path().join("40-user-preferences.rhai");
    let mut source = std::fs::read_to_string(&rule).unwrap();
    source.push_str(
        "\ncontext.accessToken[ns + \"tier\"] = context.clientMetadata.tier ?? \"none\";\n",
    );
    std::fs::write(&rule, source).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = password_grant(&ex, ("demo-cli", None), "eddie", "openid").await;
        assert_eq!(status, 200, "{body}");
        if let Some(found) = tier(&body) {
            assert_eq!(found, "none", "demo-cli has no tier");
            break;
        }
        assert!(Instant::now() < deadline, "the edit never reached a token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = ("demo-app", Some("demo-app-secret"));
    let (status, body) = password_grant(&ex, app, "eddie", "openid").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(tier(&body), Some(json!("gold")));
}

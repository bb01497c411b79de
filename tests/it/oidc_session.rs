//! The login session against OpenID Connect (issue 15, findings 8 and 10): `max_age` forces a
//! new login when the session is older (OIDC Core §3.1.2.1, §15.1; `max_age=0` as
//! `prompt=login`) and the ID token carries `auth_time`; logout cannot be triggered cross-site
//! (OpenID Connect RP-Initiated Logout 1.0): a plain `GET /logout` asks, and only the confirming
//! POST with the CSRF token or an `id_token_hint` for the session's user ends the session.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SCOPE: &str = "openid profile offline_access read:contacts";

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None, "");
    let s = TestServer::start(dir.path()).await;
    (dir, s)
}

fn with(mut p: Vec<(String, String)>, k: &str, v: &str) -> Vec<(String, String)> {
    p.retain(|(n, _)| n != k);
    p.push((k.into(), v.into()));
    p
}

/// A browser logged in (and consented) as Alice.
async fn logged_in(s: &TestServer) -> reqwest::Client {
    let b = browser();
    let res = login_and_consent(s, &b, &authorize_params(SCOPE), ALICE).await;
    assert_eq!(res.status(), 303);
    b
}

fn is_login_page(html: &str) -> bool {
    html.contains("name=\"password\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_forces_a_new_login_when_the_session_is_older() {
    let (_d, s) = server().await;
    let b = logged_in(&s).await;
    // Within max_age: a code at once, and the ID token says when the user logged in.
    let res = b
        .get(authorize_url(
            &s,
            &with(authorize_params(SCOPE), "max_age", "3600"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let code = param(&location_params(&res), "code").unwrap();
    let tokens: Value = exchange(&s, &code).await.json().await.unwrap();
    let id = payload(tokens["id_token"].as_str().unwrap());
    let auth_time = id["auth_time"].as_i64().expect("auth_time with max_age");
    assert!((id["iat"].as_i64().unwrap() - auth_time).abs() < 60);

    // max_age=0 is prompt=login: the login page, however fresh the session.
    let zero = with(authorize_params(SCOPE), "max_age", "0");
    let res = b.get(authorize_url(&s, &zero)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(is_login_page(&html), "max_age=0 must ask for the password");
    // Logging in there completes the request (no loop back to the login page).
    let res = submit_login(&b, &s.url("/login"), &html, ALICE).await;
    assert_eq!(res.status(), 303, "a code after the new login");
    assert!(param(&location_params(&res), "code").is_some());

    // A session older than max_age: the login page; with prompt=none, login_required.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let one = with(authorize_params(SCOPE), "max_age", "1");
    let res = b.get(authorize_url(&s, &one)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(is_login_page(&res.text().await.unwrap()));
    let res = b
        .get(authorize_url(&s, &with(one, "prompt", "none")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        param(&location_params(&res), "error").as_deref(),
        Some("login_required")
    );
    // Without max_age the same session still gives a code.
    let res = b
        .get(authorize_url(&s, &authorize_params(SCOPE)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(param(&location_params(&res), "code").is_some());
}

/// Whether the browser's session still gives a code without logging in.
async fn still_logged_in(s: &TestServer, b: &reqwest::Client) -> bool {
    let res = b
        .get(authorize_url(s, &authorize_params(SCOPE)))
        .send()
        .await
        .unwrap();
    res.status() == 303 && param(&location_params(&res), "code").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_cannot_be_triggered_cross_site() {
    let (_d, s) = server().await;
    let b = logged_in(&s).await;
    // What an <img src=".../logout"> on any page sends: a plain GET. It asks; the session stays.
    let res = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("method=\"post\"") && html.contains("action=\"/logout\""));
    assert!(
        still_logged_in(&s, &b).await,
        "a GET must not end the session"
    );
    // A cross-site form post has no CSRF token.
    let res = b
        .post(s.url("/logout"))
        .form(&[("csrf", "forged-forged-forged-forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(still_logged_in(&s, &b).await);
    // A forged or foreign id_token_hint is refused.
    for hint in [
        "not-a-jwt",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhdXRoMHxhbGljZSJ9.",
    ] {
        let res = b
            .get(format!("{}?id_token_hint={hint}", s.url("/logout")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{hint}");
    }
    assert!(still_logged_in(&s, &b).await);
    // The confirmation, posted with the page's CSRF token, ends the session.
    let csrf = hidden(&html, "csrf").expect("the confirmation carries the CSRF token");
    let res = b
        .post(s.url("/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(!still_logged_in(&s, &b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_hint_for_the_session_logs_out_at_once() {
    let (_d, s) = server().await;
    let b = logged_in(&s).await;
    let code = {
        let res = b
            .get(authorize_url(&s, &authorize_params(SCOPE)))
            .send()
            .await
            .unwrap();
        param(&location_params(&res), "code").unwrap()
    };
    let tokens: Value = exchange(&s, &code).await.json().await.unwrap();
    // An access token is no ID token, even though this server signed it.
    let access = tokens["access_token"].as_str().unwrap();
    let res = b
        .get(format!("{}?id_token_hint={access}", s.url("/logout")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(still_logged_in(&s, &b).await);
    let id = tokens["id_token"].as_str().unwrap();
    let res = b
        .get(format!("{}?id_token_hint={id}", s.url("/logout")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The cookie is cleared too, on the path it was set for.
    let cleared = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("claimrules_session="))
        .expect("the session cookie is cleared")
        .to_owned();
    assert!(cleared.starts_with("claimrules_session=;"), "{cleared}");
    let attrs: Vec<&str> = cleared.split("; ").collect();
    assert!(
        attrs.contains(&"Max-Age=0") && attrs.contains(&"Path=/"),
        "{cleared}"
    );
    assert!(res.text().await.unwrap().contains("You are logged out"));
    assert!(!still_logged_in(&s, &b).await);
}

//! The authorization endpoint with login and consent, driven over HTTP by a cookie-keeping client.

use crate::common;

use common::*;
use serde_json::Value;

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None, "");
    let s = TestServer::start(dir.path()).await;
    (dir, s)
}

fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_consent_then_session_and_consent_are_remembered() {
    let (_d, s) = server().await;
    let b = browser();
    let params = authorize_params("openid profile read:contacts");
    let page = b.get(authorize_url(&s, &params)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains("type=\"password\""));
    let (authz, csrf) = (
        hidden(&html, "authz").unwrap(),
        hidden(&html, "csrf").unwrap(),
    );

    // A wrong password says so without telling which field was wrong.
    let bad = b
        .post(s.url("/login"))
        .form(&[
            ("authz", authz.as_str()),
            ("csrf", csrf.as_str()),
            ("username", ALICE.0),
            ("password", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad
        .text()
        .await
        .unwrap()
        .contains("Wrong email or password."));
    let unknown = b
        .post(s.url("/login"))
        .form(&[
            ("authz", authz.as_str()),
            ("csrf", csrf.as_str()),
            ("username", "ghost@example.com"),
            ("password", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("Wrong email or password."));

    let ok = b
        .post(s.url("/login"))
        .form(&[
            ("authz", authz.as_str()),
            ("csrf", csrf.as_str()),
            ("username", ALICE.0),
            ("password", ALICE.1),
        ])
        .send()
        .await
        .unwrap();
    let cookies = set_cookies(&ok);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("claimrules_session="))
        .expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"));
    // The whole server's path, and the configured session lifetime (the default, 8 hours).
    let attrs: Vec<&str> = session.split("; ").collect();
    assert!(attrs.contains(&"Path=/"), "{session}");
    assert!(attrs.contains(&"Max-Age=28800"), "{session}");
    assert!(
        !session.contains("Secure"),
        "plain http on loopback: no Secure flag"
    );
    assert_eq!(ok.status(), 200, "consent page follows the login");
    let consent_html = ok.text().await.unwrap();
    assert!(consent_html.contains("Contacts API") && consent_html.contains("read:contacts"));
    let res = b
        .post(s.url("/consent"))
        .form(&[
            ("authz", hidden(&consent_html, "authz").unwrap().as_str()),
            ("csrf", hidden(&consent_html, "csrf").unwrap().as_str()),
            ("decision", "allow"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let p = location_params(&res);
    assert!(param(&p, "code").is_some());
    assert_eq!(param(&p, "state").as_deref(), Some("st-123"));
    assert_eq!(
        param(&p, "iss").as_deref(),
        Some(format!("{}/", s.base).as_str())
    );

    // Second /authorize: no login, no consent.
    let again = b.get(authorize_url(&s, &params)).send().await.unwrap();
    assert_eq!(again.status(), 303, "session and consent remembered");
    // Smaller scope set: still no consent page.
    let smaller = b
        .get(authorize_url(&s, &authorize_params("openid")))
        .send()
        .await
        .unwrap();
    assert_eq!(smaller.status(), 303);
    // Changed scope set: consent asked again.
    let bigger = b
        .get(authorize_url(
            &s,
            &authorize_params("openid profile read:contacts write:contacts"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bigger.status(), 200);
    assert!(bigger.text().await.unwrap().contains("action=\"/consent\""));
    // prompt=none with the changed scope: consent_required.
    let mut none = authorize_params("openid profile read:contacts write:contacts");
    none.push(("prompt".into(), "none".into()));
    let res = b.get(authorize_url(&s, &none)).send().await.unwrap();
    assert_eq!(
        param(&location_params(&res), "error").as_deref(),
        Some("consent_required")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_deny_redirects_with_access_denied() {
    let (_d, s) = server().await;
    let b = browser();
    let page = b
        .get(authorize_url(&s, &authorize_params("openid")))
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    let res = submit_login(&b, &s.url("/login"), &html, ("alice", ALICE.1)).await;
    let res = consent_if_asked(&s, &b, res, "deny").await;
    assert_eq!(res.status(), 303);
    let p = location_params(&res);
    assert_eq!(param(&p, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&p, "state").as_deref(), Some("st-123"));
    assert!(param(&p, "code").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_none_without_session_is_login_required() {
    let (_d, s) = server().await;
    let mut p = authorize_params("openid");
    p.push(("prompt".into(), "none".into()));
    let res = browser().get(authorize_url(&s, &p)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        param(&location_params(&res), "error").as_deref(),
        Some("login_required")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_token_missing_or_wrong_is_refused() {
    let (_d, s) = server().await;
    let b = browser();
    let html = b
        .get(authorize_url(&s, &authorize_params("openid")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let authz = hidden(&html, "authz").unwrap();
    for csrf in ["", "wrong-token-wrong-token-wrong"] {
        let res = b
            .post(s.url("/login"))
            .form(&[
                ("authz", authz.as_str()),
                ("csrf", csrf),
                ("username", ALICE.0),
                ("password", ALICE.1),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "csrf {csrf:?}");
        assert!(set_cookies(&res)
            .iter()
            .all(|c| !c.starts_with("claimrules_session=")));
    }
    // A fresh client without the CSRF cookie cannot replay someone's form either.
    let csrf = hidden(&html, "csrf").unwrap();
    let res = browser()
        .post(s.url("/login"))
        .form(&[
            ("authz", authz.as_str()),
            ("csrf", csrf.as_str()),
            ("username", ALICE.0),
            ("password", ALICE.1),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_denial_reaches_the_app_as_access_denied() {
    let (_d, s) = server().await;
    // The sample rule denies unverified emails for the client "demo-app"; bob is unverified.
    let mut p = authorize_params("openid");
    for (k, v) in p.iter_mut() {
        if k == "client_id" {
            *v = "demo-app".into();
        }
    }
    let res = login_and_consent(&s, &browser(), &p, BOB).await;
    assert_eq!(res.status(), 303);
    let q = location_params(&res);
    assert_eq!(param(&q, "error").as_deref(), Some("access_denied"));
    assert_eq!(
        param(&q, "error_description").as_deref(),
        Some("Please verify your email before logging in.")
    );
    assert_eq!(param(&q, "state").as_deref(), Some("st-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_party_public_client_skips_consent_and_needs_pkce() {
    let (_d, s) = server().await;
    let mut p = authorize_params("openid read:contacts");
    for (k, v) in p.iter_mut() {
        if k == "client_id" {
            *v = PUBLIC_CLIENT.into();
        }
    }
    let res = login_and_consent(&s, &browser(), &p, ALICE).await;
    assert_eq!(
        res.status(),
        303,
        "no consent page for a first-party client"
    );
    let code = param(&location_params(&res), "code").unwrap();
    let tok = reqwest::Client::new()
        .post(s.url("/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(tok.status(), 200);
    p.retain(|(k, _)| !k.starts_with("code_challenge"));
    let res = browser().get(authorize_url(&s, &p)).send().await.unwrap();
    assert_eq!(
        param(&location_params(&res), "error").as_deref(),
        Some("invalid_request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_throttled_per_account() {
    let (_d, s) = server().await;
    let b = browser();
    let html = b
        .get(authorize_url(&s, &authorize_params("openid")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (authz, csrf) = (
        hidden(&html, "authz").unwrap(),
        hidden(&html, "csrf").unwrap(),
    );
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = b
            .post(s.url("/login"))
            .form(&[
                ("authz", authz.as_str()),
                ("csrf", csrf.as_str()),
                ("username", BOB.0),
                ("password", "guess"),
            ])
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[..5], [401; 5]);
    assert_eq!(statuses[5], 429);
    // Even the right password waits now.
    let r = b
        .post(s.url("/login"))
        .form(&[
            ("authz", authz.as_str()),
            ("csrf", csrf.as_str()),
            ("username", BOB.0),
            ("password", BOB.1),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Another account from another client is unaffected... (same IP, under the IP limit).
    let r = b
        .post(s.url("/login"))
        .form(&[
            ("authz", authz.as_str()),
            ("csrf", csrf.as_str()),
            ("username", ALICE.0),
            ("password", ALICE.1),
        ])
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 429);
}

/// Query parameters of one request.
type Params = Vec<(String, String)>;

/// Error classes of /authorize: pages (never a redirect) and redirects with error + state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_errors_are_pages_or_redirects() {
    let (_d, s) = server().await;
    let base = authorize_params("openid read:contacts");
    let set = |k: &str, v: &str| {
        let mut p = base.clone();
        p.retain(|(n, _)| n != k);
        p.push((k.into(), v.into()));
        p
    };
    let drop = |k: &str| {
        let mut p = base.clone();
        p.retain(|(n, _)| n != k);
        p
    };
    // (name, params, Some(error) for a redirect or None for a page)
    let cases: Vec<(&str, Params, Option<&str>)> = vec![
        ("unknown client", set("client_id", "nobody"), None),
        ("missing client", drop("client_id"), None),
        (
            "unregistered redirect",
            set("redirect_uri", "https://evil.example/cb"),
            None,
        ),
        (
            "redirect other port",
            set("redirect_uri", "http://127.0.0.1:4001/callback"),
            None,
        ),
        (
            "redirect extra path",
            set("redirect_uri", "http://127.0.0.1:4000/callback/x"),
            None,
        ),
        (
            "redirect query appended",
            set("redirect_uri", "http://127.0.0.1:4000/callback?a=b"),
            None,
        ),
        (
            "redirect case change",
            set("redirect_uri", "http://127.0.0.1:4000/CALLBACK"),
            None,
        ),
        (
            "redirect userinfo",
            set(
                "redirect_uri",
                "http://127.0.0.1:4000@evil.example/callback",
            ),
            None,
        ),
        (
            "redirect javascript",
            set("redirect_uri", "javascript:alert(1)"),
            None,
        ),
        (
            "missing redirect with several registered",
            drop("redirect_uri"),
            None,
        ),
        (
            "unsupported response_type",
            set("response_type", "token"),
            Some("unsupported_response_type"),
        ),
        (
            "missing response_type",
            drop("response_type"),
            Some("invalid_request"),
        ),
        (
            "unknown audience",
            set("audience", "https://nope.example"),
            Some("invalid_request"),
        ),
        (
            "unknown scope",
            set("scope", "openid admin:all"),
            Some("invalid_scope"),
        ),
        (
            "plain PKCE",
            set("code_challenge_method", "plain"),
            Some("invalid_request"),
        ),
        (
            "short challenge",
            set("code_challenge", "abc"),
            Some("invalid_request"),
        ),
        (
            "method without challenge",
            drop("code_challenge"),
            Some("invalid_request"),
        ),
        (
            "bad prompt",
            set("prompt", "select_account"),
            Some("invalid_request"),
        ),
        (
            "oversized state",
            set("state", &"s".repeat(5000)),
            Some("invalid_request"),
        ),
    ];
    for (name, params, expected) in cases {
        let res = browser()
            .get(authorize_url(&s, &params))
            .send()
            .await
            .unwrap();
        match expected {
            None => {
                assert_eq!(res.status(), 400, "{name}");
                assert!(
                    res.headers().get("location").is_none(),
                    "{name}: never redirect"
                );
                assert!(
                    res.text().await.unwrap().contains("<h1>"),
                    "{name}: an HTML page"
                );
            }
            Some(err) => {
                assert_eq!(res.status(), 303, "{name}");
                let loc = res.headers()["location"].to_str().unwrap().to_owned();
                assert!(loc.starts_with(REDIRECT), "{name}: {loc}");
                let p = location_params(&res);
                assert_eq!(param(&p, "error").as_deref(), Some(err), "{name}");
                assert!(param(&p, "error_description").is_some(), "{name}");
                if name != "oversized state" {
                    assert_eq!(param(&p, "state").as_deref(), Some("st-123"), "{name}");
                }
                assert!(param(&p, "code").is_none(), "{name}");
            }
        }
    }
    // Duplicate parameter: redirect with invalid_request.
    let mut dup = base.clone();
    dup.push(("scope".into(), "openid".into()));
    let res = browser().get(authorize_url(&s, &dup)).send().await.unwrap();
    assert_eq!(
        param(&location_params(&res), "error").as_deref(),
        Some("invalid_request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_redirect_with_query_keeps_it() {
    let (_d, s) = server().await;
    let mut p = authorize_params("openid");
    p.retain(|(k, _)| k != "redirect_uri");
    p.push((
        "redirect_uri".into(),
        "http://127.0.0.1:4000/other?x=1".into(),
    ));
    let res = login_and_consent(&s, &browser(), &p, ALICE).await;
    let loc = res.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with("http://127.0.0.1:4000/other?x=1&code="),
        "{loc}"
    );
    let _: Option<Value> = None;
}

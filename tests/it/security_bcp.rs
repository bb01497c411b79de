//! The OAuth 2.0 Security Best Current Practice (RFC 9700) items this server promises, each
//! asserted over real HTTP: PKCE required for public clients and optionally for all, the RFC 9207
//! `iss` parameter, refresh-token reuse detection, exact redirect URI matching (loopback port
//! flexibility for native clients only, RFC 8252 §7.3), uncacheable token responses, framing and
//! referrer protection on every HTML page, and login throttling that cannot lock a user out.

use crate::common;

use std::time::{Duration, Instant};

use claimrules::server::throttle::{AccountKey, Throttle, ThrottleLimits};
use common::*;
use serde_json::Value;

const SCOPE: &str = "openid offline_access read:contacts";

/// A native (public, loopback) client for the RFC 8252 rows.
const NATIVE: &str = r#"
[[client]]
client_id = "native"
name = "Desktop app"
native = true
first_party = true
redirect_uris = ["http://127.0.0.1/callback", "com.example.app:/oauth"]
"#;

async fn server(extra: &str) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None, extra);
    let s = TestServer::start(dir.path()).await;
    (dir, s)
}

fn set(mut p: Vec<(String, String)>, k: &str, v: &str) -> Vec<(String, String)> {
    p.retain(|(n, _)| n != k);
    p.push((k.into(), v.into()));
    p
}

fn no_pkce(mut p: Vec<(String, String)>) -> Vec<(String, String)> {
    p.retain(|(n, _)| n != "code_challenge" && n != "code_challenge_method");
    p
}

async fn get(url: String) -> reqwest::Response {
    browser().get(url).send().await.unwrap()
}

fn error_of(res: &reqwest::Response) -> Option<String> {
    param(&location_params(res), "error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_is_required_for_public_clients() {
    let (_d, s) = server("").await;
    let spa = set(authorize_params("openid"), "client_id", PUBLIC_CLIENT);
    let res = get(authorize_url(&s, &no_pkce(spa.clone()))).await;
    assert_eq!(res.status(), 303);
    assert_eq!(error_of(&res).as_deref(), Some("invalid_request"));

    // With PKCE the public client gets a code, and redeeming it needs the verifier.
    let b = browser();
    let res = login_and_consent(&s, &b, &spa, ALICE).await;
    let code = param(&location_params(&res), "code").expect("code");
    let token = |extra: Option<&str>, code: String| {
        let url = s.url("/oauth/token");
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("client_id", PUBLIC_CLIENT.into()),
            ("code", code),
            ("redirect_uri", REDIRECT.into()),
        ];
        if let Some(v) = extra {
            form.push(("code_verifier", v.into()));
        }
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    let res = token(None, code).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let res = b.get(authorize_url(&s, &spa)).send().await.unwrap();
    let code = param(&location_params(&res), "code").expect("code");
    let res = token(Some(VERIFIER), code).await;
    assert_eq!(res.status(), 200, "control: with the verifier it works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_pkce_extends_pkce_to_confidential_clients() {
    let plain = no_pkce(authorize_params("openid"));
    let (_d, s) = server("").await;
    let res = get(authorize_url(&s, &plain)).await;
    assert_eq!(
        res.status(),
        200,
        "by default a confidential client may omit PKCE"
    );
    s.stop();

    let (_d2, s) = server("require_pkce = true").await;
    let res = get(authorize_url(&s, &plain)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(error_of(&res).as_deref(), Some("invalid_request"));
    assert!(param(&location_params(&res), "error_description")
        .unwrap()
        .contains("PKCE"));
    let res = get(authorize_url(&s, &authorize_params("openid"))).await;
    assert_eq!(res.status(), 200, "with PKCE the login page shows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authorization_response_carries_iss() {
    let (_d, s) = server("").await;
    let disc: Value = reqwest::get(s.url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(disc["authorization_response_iss_parameter_supported"], true);
    let issuer = disc["issuer"].as_str().unwrap().to_owned();
    assert_eq!(issuer, format!("{}/", s.base));

    let iss = |res: &reqwest::Response| param(&location_params(res), "iss");
    // Success.
    let b = browser();
    let ok = login_and_consent(&s, &b, &authorize_params("openid"), ALICE).await;
    assert!(param(&location_params(&ok), "code").is_some());
    assert_eq!(iss(&ok).as_deref(), Some(issuer.as_str()), "success");
    // Error found while validating.
    let res = get(authorize_url(
        &s,
        &set(authorize_params("openid"), "response_type", "token"),
    ))
    .await;
    assert_eq!(
        iss(&res).as_deref(),
        Some(issuer.as_str()),
        "validation error"
    );
    // prompt=none without a session.
    let res = get(authorize_url(
        &s,
        &set(authorize_params("openid"), "prompt", "none"),
    ))
    .await;
    assert_eq!(error_of(&res).as_deref(), Some("login_required"));
    assert_eq!(
        iss(&res).as_deref(),
        Some(issuer.as_str()),
        "login_required"
    );
    // Consent denied.
    let b = browser();
    let res = b
        .get(authorize_url(&s, &authorize_params("openid profile")))
        .send()
        .await
        .unwrap();
    let html = res.text().await.unwrap();
    let res = submit_login(&b, &s.url("/login"), &html, BOB).await;
    let res = consent_if_asked(&s, &b, res, "deny").await;
    assert_eq!(error_of(&res).as_deref(), Some("access_denied"));
    assert_eq!(
        iss(&res).as_deref(),
        Some(issuer.as_str()),
        "consent denied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_reuse_revokes_its_family_and_only_it() {
    let (_d, s) = server("").await;
    let s = &s;
    let mint = |code: String| async move {
        let body: Value = exchange(s, &code).await.json().await.unwrap();
        body["refresh_token"].as_str().unwrap().to_owned()
    };
    let a1 = mint(get_code(s, SCOPE, ALICE).await).await;
    let b1 = mint(get_code(s, SCOPE, ALICE).await).await;

    let res = refresh(s, &a1).await;
    assert_eq!(res.status(), 200);
    let a2 = res.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = refresh(s, &a2).await;
    assert_eq!(res.status(), 200);
    let a3 = res.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // An attacker replays the stolen a1: refused, and the whole family dies with it.
    let res = refresh(s, &a1).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let res = refresh(s, &a3).await;
    assert_eq!(
        res.status(),
        400,
        "the legitimate latest token is revoked too"
    );
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // Another grant of the same user and client is untouched.
    assert_eq!(refresh(s, &b1).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_uris_match_exactly_except_native_loopback_ports() {
    let (_d, s) = server(NATIVE).await;
    // A web client: no port flexibility, even on loopback.
    for uri in [
        "http://127.0.0.1:4001/callback",
        "http://127.0.0.1/callback",
        "http://127.0.0.1:80/callback",
    ] {
        let res = get(authorize_url(
            &s,
            &set(authorize_params("openid"), "redirect_uri", uri),
        ))
        .await;
        assert_eq!(res.status(), 400, "web client, {uri}");
        assert!(res.headers().get("location").is_none(), "{uri}");
    }

    let native = |uri: &str| {
        set(
            set(authorize_params("openid"), "client_id", "native"),
            "redirect_uri",
            uri,
        )
    };
    // A native client: any port on the registered loopback URI...
    let b = browser();
    let uri = "http://127.0.0.1:53123/callback";
    let res = login_and_consent(&s, &b, &native(uri), ALICE).await;
    assert_eq!(res.status(), 303);
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(&format!("{uri}?code=")), "{loc}");
    let code = param(&location_params(&res), "code").unwrap();
    // ...and the token request must name that same URI (port included).
    let redeem = |code: String, uri: &'static str| {
        let url = s.url("/oauth/token");
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("client_id", "native"),
                    ("code", &code),
                    ("redirect_uri", uri),
                    ("code_verifier", VERIFIER),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let res = redeem(code, "http://127.0.0.1/callback").await;
    assert_eq!(res.status(), 400, "registered URI without the port used");
    let res = b.get(authorize_url(&s, &native(uri))).send().await.unwrap();
    let code = param(&location_params(&res), "code").unwrap();
    assert_eq!(
        redeem(code, "http://127.0.0.1:53123/callback")
            .await
            .status(),
        200
    );
    // Only the port may differ.
    for bad in [
        "http://127.0.0.1:53123/other",
        "http://127.0.0.1:53123/callback?x=1",
        "http://127.0.0.1:53123/callback#f",
        "http://localhost:53123/callback",
        "https://127.0.0.1:53123/callback",
        "http://[::1]:53123/callback",
        "http://127.0.0.2:53123/callback",
        "http://evil@127.0.0.1:53123/callback",
        "http://evil.example:53123/callback",
        "com.example.app:/oauth/x",
        "com.example.app:53123/oauth",
    ] {
        let res = b.get(authorize_url(&s, &native(bad))).send().await.unwrap();
        assert_eq!(res.status(), 400, "native client, {bad}");
        assert!(res.headers().get("location").is_none(), "{bad}");
    }
    // The registered private-use URI works as registered.
    let res = b
        .get(authorize_url(&s, &native("com.example.app:/oauth")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(res.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("com.example.app:/oauth?code="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_responses_are_never_cached() {
    let (_d, s) = server("").await;
    let code = get_code(&s, SCOPE, ALICE).await;
    let check = |res: &reqwest::Response, what: &str| {
        assert_eq!(res.headers()["cache-control"], "no-store", "{what}");
        assert_eq!(res.headers()["pragma"], "no-cache", "{what}");
    };
    let res = exchange(&s, &code).await;
    assert_eq!(res.status(), 200);
    check(&res, "code exchange");
    let rt = res.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = refresh(&s, &rt).await;
    assert_eq!(res.status(), 200);
    check(&res, "refresh");
    let res = exchange(&s, &code).await;
    assert_eq!(res.status(), 400);
    check(&res, "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_html_page_forbids_framing_scripts_and_referrers() {
    let (_d, s) = server("").await;
    let mut pages: Vec<(&str, reqwest::Response)> = Vec::new();
    let b = browser();
    let login = b
        .get(authorize_url(&s, &authorize_params("openid profile")))
        .send()
        .await
        .unwrap();
    let html = login.text().await.unwrap();
    let (authz, csrf) = (
        hidden(&html, "authz").unwrap(),
        hidden(&html, "csrf").unwrap(),
    );
    pages.push((
        "login",
        b.get(authorize_url(&s, &authorize_params("openid profile")))
            .send()
            .await
            .unwrap(),
    ));
    pages.push((
        "error page",
        get(authorize_url(
            &s,
            &set(authorize_params("openid"), "client_id", "nobody"),
        ))
        .await,
    ));
    let post = |user: (&'static str, &'static str), csrf: String| {
        let b = b.clone();
        let (url, authz) = (s.url("/login"), authz.clone());
        async move {
            b.post(url)
                .form(&[
                    ("authz", authz.as_str()),
                    ("csrf", csrf.as_str()),
                    ("username", user.0),
                    ("password", user.1),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    pages.push((
        "csrf refused",
        post(ALICE, "forged-token-0123456789".into()).await,
    ));
    pages.push(("wrong password", post((BOB.0, "nope"), csrf.clone()).await));
    for _ in 0..5 {
        post((BOB.0, "nope"), csrf.clone()).await;
    }
    let throttled = post((BOB.0, "nope"), csrf.clone()).await;
    assert_eq!(throttled.status(), 429);
    pages.push(("throttled", throttled));
    let consent = post(ALICE, csrf.clone()).await;
    assert_eq!(consent.status(), 200);
    pages.push(("consent", consent));
    pages.push(("logout", b.get(s.url("/logout")).send().await.unwrap()));

    for (name, res) in pages {
        let h = res.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{name}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{name}: {csp}");
        assert!(!csp.contains("script-src"), "{name}: no scripts allowed");
        assert_eq!(h["x-frame-options"], "DENY", "{name}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{name}");
        assert_eq!(h["cache-control"], "no-store", "{name}");
        assert!(
            h["content-type"].to_str().unwrap().starts_with("text/html"),
            "{name}"
        );
    }
}

/// Logs in as `user` from the given local address; returns the final status.
async fn login_from(s: &TestServer, ip: &str, user: (&str, &str)) -> u16 {
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(Some(ip.parse().unwrap()))
        .build()
        .unwrap();
    let html = b
        .get(authorize_url(s, &authorize_params("openid")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let res = submit_login(&b, &s.url("/login"), &html, user).await;
    let status = res.status().as_u16();
    if status == 429 {
        let text = res.text().await.unwrap();
        let secs: u64 = regex::Regex::new(r"Try again in (\d+) seconds")
            .unwrap()
            .captures(&text)
            .expect("the wait is stated")[1]
            .parse()
            .unwrap();
        assert!(
            secs <= 300,
            "a lock lasts at most one 5-minute window: {secs}"
        );
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_cannot_lock_a_user_out() {
    let (_d, s) = server("").await;
    // The attacker, from 127.0.0.2, fails on purpose until throttled.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(login_from(&s, "127.0.0.2", (ALICE.0, "guess")).await);
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(statuses[5..], [429; 2], "{statuses:?}");
    assert_eq!(
        login_from(&s, "127.0.0.2", ALICE).await,
        429,
        "the attacker's address stays throttled even with the right password"
    );
    // The user, from their own address, logs in at once (consent page or code).
    let status = login_from(&s, "127.0.0.1", ALICE).await;
    assert!(
        status == 200 || status == 303,
        "the user is not locked out: {status}"
    );

    // Locks end with their window: a short window unlocks within a bounded poll.
    let t = Throttle::new(ThrottleLimits {
        window: Duration::from_millis(300),
        ..ThrottleLimits::default()
    });
    let alice = AccountKey::user("auth0|alice");
    for _ in 0..5 {
        drop(t.begin(&alice, "10.0.0.1").unwrap());
    }
    assert!(t.check(&alice, "10.0.0.1").is_err());
    let start = Instant::now();
    while t.check(&alice, "10.0.0.1").is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the lock must end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ThrottleLimits::default().window <= Duration::from_secs(300));
}

//! Bad input at the authorization endpoint, as a table: every malformed or hostile request gets
//! the RFC 6749 §4.1.2.1 answer — an error page (400, no `Location`) when the client or its
//! redirect URI cannot be trusted, else a redirect to the *registered* URI with `error`,
//! `error_description`, `state` and `iss` — never a 5xx, never a code, never a redirect anywhere
//! else. Each row is sent twice: as `GET /authorize` and as the `authz` field of a `POST /login`
//! with a valid CSRF token and the right password (the forms re-validate the request).

use crate::common;

use common::*;

/// Extra clients for the rows that need them.
const EXTRA: &str = r#"
[[client]]
client_id = "refresh-only"
client_secret = "refresh-only-secret-0123"
redirect_uris = ["http://127.0.0.1:4000/callback"]
grant_types = ["refresh_token"]
"#;

/// What a row expects.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An HTML error page: 400, no `Location`.
    Page,
    /// A redirect to the registered `REDIRECT` with this `error`; `state` echoed when `true`.
    Redirect(&'static str, bool),
}

struct Case {
    name: &'static str,
    /// The raw query string.
    query: String,
    expect: Expect,
}

fn enc(params: &[(String, String)]) -> String {
    serde_urlencoded::to_string(params).unwrap()
}

fn base() -> Vec<(String, String)> {
    authorize_params("openid read:contacts")
}

fn set(k: &str, v: &str) -> String {
    let mut p = base();
    p.retain(|(n, _)| n != k);
    p.push((k.into(), v.into()));
    enc(&p)
}

fn drop(k: &str) -> String {
    let mut p = base();
    p.retain(|(n, _)| n != k);
    enc(&p)
}

fn dup(k: &str, v: &str) -> String {
    let mut p = base();
    p.push((k.into(), v.into()));
    enc(&p)
}

fn page(name: &'static str, query: String) -> Case {
    Case {
        name,
        query,
        expect: Expect::Page,
    }
}

fn redirect(name: &'static str, query: String, error: &'static str) -> Case {
    Case {
        name,
        query,
        expect: Expect::Redirect(error, true),
    }
}

fn redirect_redir(name: &'static str, redirect_uri: &str) -> Case {
    page(name, set("redirect_uri", redirect_uri))
}

fn cases() -> Vec<Case> {
    let other_client = |client: &str| {
        let mut p = base();
        p.retain(|(n, _)| n != "client_id");
        p.push(("client_id".into(), client.into()));
        p
    };
    vec![
        // --- The client cannot be identified: a page.
        page("unknown client", set("client_id", "nobody")),
        page("missing client_id", drop("client_id")),
        page("empty client_id", set("client_id", "")),
        page("client_id case change", set("client_id", "WEB")),
        page("client_id with whitespace", set("client_id", " web")),
        page(
            "client_id invalid UTF-8",
            drop("client_id") + "&client_id=w%FFeb",
        ),
        page("repeated client_id", dup("client_id", "spa")),
        page("repeated redirect_uri", dup("redirect_uri", REDIRECT)),
        // Found by the authorize_query fuzz target: only the last repeated name was checked.
        page(
            "repeated client_id, then another repeated parameter",
            dup("client_id", "spa") + "&state=again",
        ),
        // --- redirect_uri tricks: a page, never a redirect.
        redirect_redir("other host", "https://evil.example/callback"),
        redirect_redir("other port", "http://127.0.0.1:4001/callback"),
        redirect_redir("no port", "http://127.0.0.1/callback"),
        redirect_redir("https instead of http", "https://127.0.0.1:4000/callback"),
        redirect_redir("localhost instead of IP", "http://localhost:4000/callback"),
        redirect_redir("IPv6 loopback", "http://[::1]:4000/callback"),
        redirect_redir("extra path", "http://127.0.0.1:4000/callback/x"),
        redirect_redir("trailing slash", "http://127.0.0.1:4000/callback/"),
        redirect_redir("dot segments", "http://127.0.0.1:4000/callback/../evil"),
        redirect_redir("query appended", "http://127.0.0.1:4000/callback?a=b"),
        redirect_redir("empty query appended", "http://127.0.0.1:4000/callback?"),
        redirect_redir("fragment", "http://127.0.0.1:4000/callback#frag"),
        redirect_redir(
            "userinfo host confusion",
            "http://127.0.0.1:4000@evil.example/callback",
        ),
        redirect_redir("userinfo prefix", "http://evil@127.0.0.1:4000/callback"),
        redirect_redir("path case change", "http://127.0.0.1:4000/CALLBACK"),
        redirect_redir("scheme case change", "HTTP://127.0.0.1:4000/callback"),
        redirect_redir("percent-encoded path", "http://127.0.0.1:4000/%63allback"),
        redirect_redir(
            "encoded slash",
            "http://127.0.0.1:4000/callback%2F..%2Fevil",
        ),
        redirect_redir("leading space", " http://127.0.0.1:4000/callback"),
        redirect_redir("trailing newline", "http://127.0.0.1:4000/callback\n"),
        redirect_redir("NUL byte", "http://127.0.0.1:4000/callback\0"),
        redirect_redir("javascript scheme", "javascript:alert(1)"),
        redirect_redir("data scheme", "data:text/html,<script>alert(1)</script>"),
        redirect_redir("relative", "/callback"),
        redirect_redir("scheme-relative", "//evil.example/callback"),
        redirect_redir("empty", ""),
        redirect_redir(
            "registered URI without its query",
            "http://127.0.0.1:4000/other",
        ),
        page(
            "missing redirect_uri with several registered",
            drop("redirect_uri"),
        ),
        // --- Trusted redirect URI, bad request: redirected errors.
        redirect(
            "response_type token",
            set("response_type", "token"),
            "unsupported_response_type",
        ),
        redirect(
            "response_type code id_token",
            set("response_type", "code id_token"),
            "unsupported_response_type",
        ),
        redirect(
            "response_type case change",
            set("response_type", "Code"),
            "unsupported_response_type",
        ),
        redirect(
            "missing response_type",
            drop("response_type"),
            "invalid_request",
        ),
        redirect(
            "repeated response_type",
            dup("response_type", "code"),
            "invalid_request",
        ),
        redirect("repeated scope", dup("scope", "openid"), "invalid_request"),
        redirect(
            "repeated code_challenge",
            dup("code_challenge", CHALLENGE),
            "invalid_request",
        ),
        redirect(
            "client without the code grant",
            enc(&other_client("refresh-only")),
            "unauthorized_client",
        ),
        redirect(
            "unknown audience",
            set("audience", "https://nope.example"),
            "invalid_request",
        ),
        redirect(
            "unknown scope",
            set("scope", "openid admin:all"),
            "invalid_scope",
        ),
        redirect(
            "scope of another API",
            set("scope", "openid read:x"),
            "invalid_scope",
        ),
        redirect(
            "API scope without audience",
            {
                let mut p = base();
                p.retain(|(n, _)| n != "audience");
                enc(&p)
            },
            "invalid_scope",
        ),
        redirect(
            "PKCE plain",
            set("code_challenge_method", "plain"),
            "invalid_request",
        ),
        redirect(
            "PKCE method lower case",
            set("code_challenge_method", "s256"),
            "invalid_request",
        ),
        redirect(
            "PKCE unknown method",
            set("code_challenge_method", "S512"),
            "invalid_request",
        ),
        redirect(
            "challenge without method",
            drop("code_challenge_method"),
            "invalid_request",
        ),
        redirect(
            "method without challenge",
            drop("code_challenge"),
            "invalid_request",
        ),
        redirect(
            "short challenge (42)",
            set("code_challenge", &CHALLENGE[..42]),
            "invalid_request",
        ),
        redirect(
            "overlong challenge (44)",
            set("code_challenge", &format!("{CHALLENGE}A")),
            "invalid_request",
        ),
        redirect(
            "overlong challenge (128)",
            set("code_challenge", &"a".repeat(128)),
            "invalid_request",
        ),
        redirect(
            "challenge with padding",
            set("code_challenge", &format!("{}=", &CHALLENGE[..42])),
            "invalid_request",
        ),
        redirect(
            "challenge with base64 (not url) characters",
            set("code_challenge", &format!("{}+", &CHALLENGE[..42])),
            "invalid_request",
        ),
        redirect(
            "public client without PKCE",
            {
                let mut p = other_client(PUBLIC_CLIENT);
                p.retain(|(n, _)| n != "code_challenge" && n != "code_challenge_method");
                enc(&p)
            },
            "invalid_request",
        ),
        redirect(
            "oversized nonce",
            set("nonce", &"n".repeat(5000)),
            "invalid_request",
        ),
        redirect(
            "unsupported prompt",
            set("prompt", "select_account"),
            "invalid_request",
        ),
        redirect(
            "prompt none with login",
            set("prompt", "none login"),
            "invalid_request",
        ),
        // OIDC Core §3.1.2.1: max_age is a non-negative number of seconds.
        redirect("max_age negative", set("max_age", "-1"), "invalid_request"),
        redirect(
            "max_age not a number",
            set("max_age", "soon"),
            "invalid_request",
        ),
        redirect(
            "max_age fractional",
            set("max_age", "1.5"),
            "invalid_request",
        ),
        redirect(
            "max_age with a sign",
            set("max_age", "+5"),
            "invalid_request",
        ),
        redirect("max_age empty", set("max_age", ""), "invalid_request"),
        redirect(
            "max_age beyond any session",
            set("max_age", "99999999999999999999"),
            "invalid_request",
        ),
        redirect(
            "repeated max_age",
            set("max_age", "5") + "&max_age=6",
            "invalid_request",
        ),
        Case {
            name: "oversized state (not echoed)",
            query: set("state", &"s".repeat(5000)),
            expect: Expect::Redirect("invalid_request", false),
        },
    ]
}

/// Asserts one answer against the row.
async fn check(name: &str, how: &str, res: reqwest::Response, expect: Expect, issuer: &str) {
    let status = res.status();
    assert!(!status.is_server_error(), "{name} ({how}): 5xx {status}");
    match expect {
        Expect::Page => {
            assert_eq!(status, 400, "{name} ({how})");
            assert!(
                res.headers().get("location").is_none(),
                "{name} ({how}): must never redirect"
            );
            let html = res.text().await.unwrap();
            assert!(html.contains("<h1>"), "{name} ({how}): an HTML page");
            assert!(
                !html.contains("name=\"password\""),
                "{name} ({how}): no login form for an untrusted request"
            );
        }
        Expect::Redirect(error, echo_state) => {
            assert_eq!(status, 303, "{name} ({how})");
            let loc = res.headers()["location"].to_str().unwrap().to_owned();
            let url = url::Url::parse(&loc).expect("absolute Location");
            let mut bare = url.clone();
            bare.set_query(None);
            assert_eq!(
                bare.as_str(),
                REDIRECT,
                "{name} ({how}): redirected to the registered URI only"
            );
            assert!(url.fragment().is_none(), "{name} ({how})");
            let p: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            assert_eq!(param(&p, "error").as_deref(), Some(error), "{name} ({how})");
            let desc = param(&p, "error_description").unwrap_or_default();
            assert!(!desc.is_empty(), "{name} ({how}): a description");
            assert!(param(&p, "code").is_none(), "{name} ({how}): no code");
            assert_eq!(
                param(&p, "iss").as_deref(),
                Some(issuer),
                "{name} ({how}): RFC 9207 iss"
            );
            let state = param(&p, "state");
            if echo_state {
                assert_eq!(state.as_deref(), Some("st-123"), "{name} ({how})");
            } else {
                assert!(
                    state.is_none(),
                    "{name} ({how}): oversized state not echoed"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_authorization_request_gets_its_rfc_error() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None, EXTRA);
    let s = TestServer::start(dir.path()).await;
    let issuer = format!("{}/", s.base);
    let cases = cases();
    let pages = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Page))
        .count();
    assert!(cases.len() >= 30, "{} rows", cases.len());
    assert!(pages >= 15 && cases.len() - pages >= 15);
    println!(
        "{} rows ({pages} error pages, {} redirected errors), each sent 3 ways",
        cases.len(),
        cases.len() - pages
    );

    // A valid CSRF pair for the POST /login replays.
    let b = browser();
    let html = b
        .get(authorize_url(&s, &base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden(&html, "csrf").expect("login page for the valid request");

    for case in &cases {
        let res = browser()
            .get(format!("{}/authorize?{}", s.base, case.query))
            .send()
            .await
            .unwrap();
        check(case.name, "GET /authorize", res, case.expect, &issuer).await;

        let res = b
            .post(s.url("/login"))
            .form(&[
                ("authz", case.query.as_str()),
                ("csrf", csrf.as_str()),
                ("username", ALICE.0),
                ("password", ALICE.1),
            ])
            .send()
            .await
            .unwrap();
        check(case.name, "POST /login", res, case.expect, &issuer).await;

        let res = b
            .post(s.url("/consent"))
            .form(&[
                ("authz", case.query.as_str()),
                ("csrf", csrf.as_str()),
                ("decision", "allow"),
            ])
            .send()
            .await
            .unwrap();
        check(case.name, "POST /consent", res, case.expect, &issuer).await;
    }

    // Control: the unmodified request still yields a code, so the rows fail for their own reason.
    let res = login_and_consent(&s, &browser(), &base(), ALICE).await;
    assert_eq!(res.status(), 303);
    assert!(param(&location_params(&res), "code").is_some());
}

/// A query larger than any parameter limit is refused without a 5xx and without a code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_query_is_refused_without_server_error() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None, "");
    let s = TestServer::start(dir.path()).await;
    for size in [10_000, 60_000] {
        let res = browser()
            .get(format!(
                "{}/authorize?{}",
                s.base,
                set("junk", &"x".repeat(size))
            ))
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert!(
            status.is_client_error() || status == 200,
            "{size}: {status}"
        );
        if let Some(loc) = res.headers().get("location") {
            panic!("{size}: unexpected redirect {loc:?}");
        }
    }
}

/// The forms carry the request decoded, so a tampered `authz` can hold what no URL may: control
/// characters, spaces, raw non-ASCII. Such a request is a 400 page at every form (it used to
/// make the consent form's redirect header invalid: a 500); control characters in the other
/// fields are refused without a 5xx too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_a_form_field_are_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None, "");
    let s = TestServer::start(dir.path()).await;
    let b = browser();
    let html = b
        .get(authorize_url(&s, &base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden(&html, "csrf").unwrap();
    let good = enc(&base());
    let rows: Vec<(&str, String)> = vec![
        ("LF", format!("{good}&x=a\nb")),
        ("CR LF", format!("{good}\r\nSet-Cookie: x=1")),
        ("NUL", format!("{good}&x=\0")),
        ("ESC", format!("{good}&x=\x1b[31m")),
        ("DEL", format!("{good}&x=\x7f")),
        ("tab", format!("{good}&x=\t")),
        ("space", format!("{good}&x=a b")),
        ("raw non-ASCII", format!("{good}&x=é")),
        (
            "LF inside redirect_uri",
            good.replace("callback", "call\nback"),
        ),
    ];
    for (name, authz) in &rows {
        for (path, field, value) in [
            ("/login", "username", ALICE.0),
            ("/consent", "decision", "allow"),
        ] {
            let mut form = vec![
                ("authz", authz.as_str()),
                ("csrf", csrf.as_str()),
                (field, value),
            ];
            if path == "/login" {
                form.push(("password", ALICE.1));
            }
            let res = b.post(s.url(path)).form(&form).send().await.unwrap();
            assert_eq!(res.status(), 400, "{name} at {path}");
            assert!(res.headers().get("location").is_none(), "{name} at {path}");
        }
    }
    // Control characters elsewhere: refused (403 CSRF, 401 login), never a 5xx.
    for (path, field) in [
        ("/login", "username"),
        ("/login", "csrf"),
        ("/consent", "decision"),
        ("/consent", "csrf"),
    ] {
        for bad in ["a\r\nb", "\0", "\x1b[2J"] {
            let mut form = vec![("authz", good.clone()), ("csrf", csrf.clone())];
            form.retain(|(k, _)| *k != field);
            form.push((field, bad.to_owned()));
            if path == "/login" && field != "username" {
                form.push(("username", ALICE.0.to_owned()));
            }
            if path == "/login" {
                form.push(("password", "x".to_owned()));
            }
            let res = b.post(s.url(path)).form(&form).send().await.unwrap();
            let status = res.status();
            assert!(
                status.is_client_error() || status.is_redirection(),
                "{path} {field} {bad:?}: {status}"
            );
        }
    }
}

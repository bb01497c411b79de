//! Bad input at the token hooks (`/hooks/hydra/token`, `/hooks/okta/token`), as a table: wrong
//! credentials, malformed or mistyped bodies and oversized bodies each get their 4xx JSON error,
//! never a 5xx and never claims or patch commands.

use crate::common;

use common::*;
use serde_json::{json, Value};

const HYDRA_KEY: &str = "Bearer hydra-secret-0123456789";
const OKTA_KEY: &str = "okta-secret-0123456789";
const HYDRA: &str = "/hooks/hydra/token";
const OKTA: &str = "/hooks/okta/token";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/hooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

struct Case {
    name: &'static str,
    path: &'static str,
    auth: Option<String>,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
    ctype: Option<&'static str>,
}

/// `c` sent with this `Content-Type` (`None`: without one).
fn typed(ctype: Option<&'static str>, c: Case) -> Case {
    Case { ctype, ..c }
}

fn case(
    name: &'static str,
    path: &'static str,
    auth: Option<&str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    error: &'static str,
) -> Case {
    Case {
        name,
        path,
        auth: auth.map(str::to_owned),
        body: body.into(),
        status,
        error,
        ctype: Some("application/json"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_hook_call_gets_a_4xx() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        None,
        &format!("[hooks]\nhydra_api_key = \"{HYDRA_KEY}\"\nokta_authorization = \"{OKTA_KEY}\"\n"),
    );
    let s = TestServer::start(dir.path()).await;
    let hydra_ok = fixture("hydra_docs_sample.json");
    let okta_ok = fixture("okta_docs_sample.json");
    let okta_json: Value = serde_json::from_str(&okta_ok).unwrap();
    let hydra_json: Value = serde_json::from_str(&hydra_ok).unwrap();
    let with = |mut v: Value, pointer: &str, new: Value| {
        *v.pointer_mut(pointer).unwrap() = new;
        serde_json::to_vec(&v).unwrap()
    };
    let without = |mut v: Value, key: &str| {
        v.as_object_mut().unwrap().remove(key);
        serde_json::to_vec(&v).unwrap()
    };
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let big = format!(
        "{{\"request\": {{\"client_id\": \"{}\"}}}}",
        "x".repeat(1_100_000)
    );
    let h = Some(HYDRA_KEY);
    let o = Some(OKTA_KEY);
    let cases = vec![
        // --- Content type: a browser can send text/plain or a form cross-site without a CORS
        // preflight; a hook takes JSON only.
        typed(
            Some("text/plain"),
            case(
                "hydra: text/plain body",
                HYDRA,
                h,
                hydra_ok.clone(),
                415,
                "invalid_request",
            ),
        ),
        typed(
            Some("application/x-www-form-urlencoded"),
            case(
                "okta: form body",
                OKTA,
                o,
                okta_ok.clone(),
                415,
                "invalid_request",
            ),
        ),
        typed(
            None,
            case(
                "okta: no content type",
                OKTA,
                o,
                okta_ok.clone(),
                415,
                "invalid_request",
            ),
        ),
        typed(
            Some("application/jsonx"),
            case(
                "hydra: look-alike type",
                HYDRA,
                h,
                hydra_ok.clone(),
                415,
                "invalid_request",
            ),
        ),
        // --- Credentials.
        case(
            "hydra: no credentials",
            HYDRA,
            None,
            hydra_ok.clone(),
            401,
            "unauthorized",
        ),
        case(
            "hydra: wrong key",
            HYDRA,
            Some("Bearer nope"),
            hydra_ok.clone(),
            401,
            "unauthorized",
        ),
        case(
            "hydra: key without its scheme",
            HYDRA,
            Some("hydra-secret-0123456789"),
            hydra_ok.clone(),
            401,
            "unauthorized",
        ),
        case(
            "hydra: key prefix",
            HYDRA,
            Some(&HYDRA_KEY[..HYDRA_KEY.len() - 1]),
            hydra_ok.clone(),
            401,
            "unauthorized",
        ),
        case(
            "hydra: the Okta secret",
            HYDRA,
            o,
            hydra_ok.clone(),
            401,
            "unauthorized",
        ),
        case(
            "okta: no credentials",
            OKTA,
            None,
            okta_ok.clone(),
            401,
            "unauthorized",
        ),
        case(
            "okta: wrong secret",
            OKTA,
            Some("nope"),
            okta_ok.clone(),
            401,
            "unauthorized",
        ),
        case(
            "okta: secret case change",
            OKTA,
            Some(&OKTA_KEY.to_uppercase()),
            okta_ok.clone(),
            401,
            "unauthorized",
        ),
        case(
            "okta: the Hydra key",
            OKTA,
            h,
            okta_ok.clone(),
            401,
            "unauthorized",
        ),
        // --- Bodies.
        case("hydra: empty body", HYDRA, h, "", 400, "invalid_request"),
        case(
            "hydra: not JSON",
            HYDRA,
            h,
            "session=1",
            400,
            "invalid_request",
        ),
        case(
            "hydra: truncated JSON",
            HYDRA,
            h,
            &hydra_ok[..hydra_ok.len() / 2],
            400,
            "invalid_request",
        ),
        case("hydra: JSON array", HYDRA, h, "[]", 400, "invalid_request"),
        case(
            "hydra: no request",
            HYDRA,
            h,
            without(hydra_json.clone(), "request"),
            400,
            "invalid_request",
        ),
        case(
            "hydra: request is a string",
            HYDRA,
            h,
            with(hydra_json.clone(), "/request", json!("x")),
            400,
            "invalid_request",
        ),
        case(
            "hydra: granted_scopes is a string",
            HYDRA,
            h,
            with(
                hydra_json.clone(),
                "/request/granted_scopes",
                json!("openid"),
            ),
            400,
            "invalid_request",
        ),
        case(
            "hydra: session is a number",
            HYDRA,
            h,
            with(hydra_json.clone(), "/session", json!(5)),
            400,
            "invalid_request",
        ),
        case(
            "hydra: nesting deeper than the parser allows",
            HYDRA,
            h,
            deep.clone(),
            400,
            "invalid_request",
        ),
        case(
            "hydra: body over 1 MiB",
            HYDRA,
            h,
            big.clone(),
            413,
            "invalid_request",
        ),
        case(
            "hydra: invalid UTF-8",
            HYDRA,
            h,
            b"{\"request\": {\"client_id\": \"\xff\"}}".to_vec(),
            400,
            "invalid_request",
        ),
        case("okta: empty body", OKTA, o, "", 400, "invalid_request"),
        case("okta: JSON array", OKTA, o, "[1]", 400, "invalid_request"),
        case(
            "okta: other eventType",
            OKTA,
            o,
            with(okta_json.clone(), "/eventType", json!("com.okta.other")),
            400,
            "invalid_request",
        ),
        case(
            "okta: no eventType",
            OKTA,
            o,
            without(okta_json.clone(), "eventType"),
            400,
            "invalid_request",
        ),
        case(
            "okta: no data",
            OKTA,
            o,
            without(okta_json.clone(), "data"),
            400,
            "invalid_request",
        ),
        case(
            "okta: data is a string",
            OKTA,
            o,
            with(okta_json.clone(), "/data", json!("x")),
            400,
            "invalid_request",
        ),
        case(
            "okta: access claims is an array",
            OKTA,
            o,
            with(okta_json.clone(), "/data/access/claims", json!([1, 2])),
            400,
            "invalid_request",
        ),
        case(
            "okta: nesting deeper than the parser allows",
            OKTA,
            o,
            deep,
            400,
            "invalid_request",
        ),
        case(
            "okta: body over 1 MiB",
            OKTA,
            o,
            big,
            413,
            "invalid_request",
        ),
    ];
    assert!(cases.len() >= 15);
    println!("{} rows", cases.len());
    let http = reqwest::Client::new();
    for c in &cases {
        let mut req = http.post(s.url(c.path)).body(c.body.clone());
        if let Some(t) = c.ctype {
            req = req.header("content-type", t);
        }
        if let Some(a) = &c.auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(json!(null));
        assert!(status < 500, "{}: {status} {body}", c.name);
        assert_eq!(status, c.status, "{}: {body}", c.name);
        assert_eq!(body["error"], c.error, "{}: {body}", c.name);
        assert!(body.get("session").is_none(), "{}: claims leaked", c.name);
        assert!(body.get("commands").is_none(), "{}: patch leaked", c.name);
    }

    // Controls: the untouched samples are answered by the rules.
    let res = http
        .post(s.url(HYDRA))
        .header("authorization", HYDRA_KEY)
        .header("content-type", "application/json; charset=UTF-8")
        .body(hydra_ok)
        .send()
        .await
        .unwrap();
    assert!(
        res.status() == 200 || res.status() == 204,
        "{}",
        res.status()
    );
    let res = http
        .post(s.url(OKTA))
        .header("authorization", OKTA_KEY)
        .header("content-type", "application/json")
        .body(okta_ok)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Issue 15, finding 4, against the real binary on loopback: a hook without a secret does not
/// exist unless `insecure_loopback = true`, and even then only for a caller on this machine —
/// not for a DNS-rebinding page (foreign `Host`), a reverse proxy (forwarding headers) or a
/// cross-site `text/plain` post.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_without_a_secret_needs_an_explicit_opt_in_and_a_local_caller() {
    let body = fixture("hydra_docs_sample.json");
    let post = |base: &str, host: Option<String>, extra: Option<(&str, &str)>, ctype: &str| {
        let mut req = reqwest::Client::new()
            .post(format!("{base}{HYDRA}"))
            .header("content-type", ctype)
            .body(body.clone());
        if let Some(h) = host {
            req = req.header("host", h);
        }
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_binary(dir.path(), "").await;
    assert_eq!(
        post(&s.base, None, None, "application/json").await,
        404,
        "no opt-in"
    );
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let s = start_binary(dir.path(), "[hooks]\ninsecure_loopback = true\n").await;
    let ok = post(&s.base, None, None, "application/json").await;
    assert!(ok == 200 || ok == 204, "a local caller is served: {ok}");
    let ok = post(
        &s.base,
        Some(format!("localhost:{}", s.port)),
        None,
        "application/json",
    )
    .await;
    assert!(ok == 200 || ok == 204, "localhost is local: {ok}");
    for (name, host, extra) in [
        (
            "DNS rebinding",
            Some(format!("rebind.evil.example:{}", s.port)),
            None,
        ),
        (
            "issuer name forwarded by a proxy",
            Some("login.example.com".to_owned()),
            None,
        ),
        (
            "X-Forwarded-For",
            None,
            Some(("x-forwarded-for", "203.0.113.9")),
        ),
        ("Forwarded", None, Some(("forwarded", "for=203.0.113.9"))),
    ] {
        assert_eq!(
            post(&s.base, host, extra, "application/json").await,
            404,
            "{name}"
        );
    }
    assert_eq!(
        post(&s.base, None, None, "text/plain").await,
        415,
        "cross-site text/plain"
    );
}

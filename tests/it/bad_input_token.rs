//! Bad input at the token endpoint, as a table: every malformed or hostile request gets the RFC
//! 6749 §5.2 JSON error with the right status (`invalid_client` 401 with `WWW-Authenticate` when
//! the client tried HTTP Basic), `Cache-Control: no-store`, never a 5xx and never a token.

use crate::common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const SCOPE: &str = "openid profile email offline_access read:contacts";

/// A logged-in, consented browser: each `/authorize` answers at once with a fresh code.
struct Minter {
    browser: reqwest::Client,
}

impl Minter {
    async fn new(s: &TestServer) -> Minter {
        let browser = browser();
        let res = login_and_consent(s, &browser, &authorize_params(SCOPE), ALICE).await;
        assert_eq!(res.status(), 303);
        Minter { browser }
    }

    async fn code_with(&self, s: &TestServer, params: &[(String, String)]) -> String {
        let res = self
            .browser
            .get(authorize_url(s, params))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            303,
            "session and consent make /authorize answer"
        );
        param(&location_params(&res), "code").expect("a code")
    }

    async fn code(&self, s: &TestServer) -> String {
        self.code_with(s, &authorize_params(SCOPE)).await
    }

    async fn refresh_token(&self, s: &TestServer) -> String {
        let code = self.code(s).await;
        let body: Value = exchange(s, &code).await.json().await.unwrap();
        body["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_owned()
    }
}

type Form = Vec<(&'static str, String)>;

enum Body {
    Form(Form),
    Raw(&'static str, Vec<u8>),
}

struct Case {
    name: &'static str,
    body: Body,
    /// A raw `Authorization` header.
    authorization: Option<String>,
    status: u16,
    error: &'static str,
}

fn code_form(code: &str) -> Form {
    vec![
        ("grant_type", "authorization_code".into()),
        ("client_id", CLIENT_ID.into()),
        ("client_secret", CLIENT_SECRET.into()),
        ("code", code.into()),
        ("redirect_uri", REDIRECT.into()),
        ("code_verifier", VERIFIER.into()),
    ]
}

fn refresh_form(token: &str) -> Form {
    vec![
        ("grant_type", "refresh_token".into()),
        ("client_id", CLIENT_ID.into()),
        ("client_secret", CLIENT_SECRET.into()),
        ("refresh_token", token.into()),
    ]
}

fn with(mut f: Form, k: &'static str, v: &str) -> Form {
    f.retain(|(n, _)| *n != k);
    f.push((k, v.into()));
    f
}

fn without(mut f: Form, k: &str) -> Form {
    f.retain(|(n, _)| *n != k);
    f
}

fn plus(mut f: Form, k: &'static str, v: &str) -> Form {
    f.push((k, v.into()));
    f
}

fn basic(id: &str, secret: &str) -> Option<String> {
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    ))
}

fn form(name: &'static str, f: Form, status: u16, error: &'static str) -> Case {
    Case {
        name,
        body: Body::Form(f),
        authorization: None,
        status,
        error,
    }
}

fn raw(name: &'static str, ctype: &'static str, body: &[u8], error: &'static str) -> Case {
    Case {
        name,
        body: Body::Raw(ctype, body.to_vec()),
        authorization: None,
        status: 400,
        error,
    }
}

fn basic_case(
    name: &'static str,
    f: Form,
    authorization: Option<String>,
    status: u16,
    error: &'static str,
) -> Case {
    Case {
        name,
        body: Body::Form(f),
        authorization,
        status,
        error,
    }
}

async fn send(s: &TestServer, case: &Case) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(s.url("/oauth/token"));
    if let Some(a) = &case.authorization {
        req = req.header("authorization", a);
    }
    req = match &case.body {
        Body::Form(f) => req.form(f),
        Body::Raw(ctype, bytes) => req.header("content-type", *ctype).body(bytes.clone()),
    };
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_request_gets_its_rfc_error() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None, "");
    let s = TestServer::start(dir.path()).await;
    let m = Minter::new(&s).await;

    // An expired code, minted through the store.
    let grant = alice_grant("openid");
    s.state
        .store
        .put_code(&claimrules::crypto::sha256_hex("expired-code"), &grant, 1)
        .await
        .unwrap();

    let no_pkce = {
        let mut p = authorize_params(SCOPE);
        p.retain(|(k, _)| k != "code_challenge" && k != "code_challenge_method");
        m.code_with(&s, &p).await
    };
    // One code that no row redeems (rows failing before redemption may use it).
    let spare = m.code(&s).await;
    let rt_other_client = m.refresh_token(&s).await;
    let rt_wide = m.refresh_token(&s).await;
    let rt_unknown_scope = m.refresh_token(&s).await;
    let access_token = {
        let code = m.code(&s).await;
        let body: Value = exchange(&s, &code).await.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    };
    let mut fresh = Vec::new();
    for _ in 0..12 {
        fresh.push(m.code(&s).await);
    }
    let c = |i: usize| fresh[i].clone();

    let cases = vec![
        // --- Body format.
        form("empty body", vec![], 400, "invalid_request"),
        raw(
            "text/plain body",
            "text/plain",
            b"grant_type=authorization_code",
            "invalid_request",
        ),
        raw(
            "multipart body",
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nauthorization_code\r\n--x--",
            "invalid_request",
        ),
        raw(
            "XML body",
            "application/xml",
            b"<grant_type>authorization_code</grant_type>",
            "invalid_request",
        ),
        raw(
            "form body not UTF-8",
            "application/x-www-form-urlencoded",
            b"grant_type=authorization_code&code=\xff\xfe",
            "invalid_request",
        ),
        raw("malformed JSON", "application/json", b"{\"grant_type\": ", "invalid_request"),
        raw("JSON array", "application/json", b"[\"grant_type\"]", "invalid_request"),
        raw("JSON string", "application/json", b"\"grant_type\"", "invalid_request"),
        raw("JSON number value", "application/json", b"{\"grant_type\": 1}", "invalid_request"),
        raw(
            "JSON object value",
            "application/json",
            b"{\"grant_type\": {\"a\": \"b\"}}",
            "invalid_request",
        ),
        raw(
            "JSON array value",
            "application/json",
            b"{\"grant_type\": [\"authorization_code\"]}",
            "invalid_request",
        ),
        raw(
            "JSON null grant_type",
            "application/json",
            b"{\"grant_type\": null}",
            "invalid_request",
        ),
        Case {
            name: "JSON repeated key",
            body: Body::Raw(
                "application/json",
                format!(
                    "{{\"grant_type\":\"authorization_code\",\"client_id\":\"{CLIENT_ID}\",\
                     \"client_secret\":\"{CLIENT_SECRET}\",\"redirect_uri\":\"{REDIRECT}\",\
                     \"code_verifier\":\"{VERIFIER}\",\"code\":\"other\",\"code\":\"{spare}\"}}"
                )
                .into_bytes(),
            ),
            authorization: None,
            status: 400,
            error: "invalid_request",
        },
        form(
            "form repeated grant_type",
            plus(code_form(&spare), "grant_type", "authorization_code"),
            400,
            "invalid_request",
        ),
        form(
            "form repeated client_secret",
            plus(code_form(&spare), "client_secret", CLIENT_SECRET),
            400,
            "invalid_request",
        ),
        // --- grant_type.
        form(
            "empty grant_type",
            with(code_form(&spare), "grant_type", ""),
            400,
            "invalid_request",
        ),
        form(
            "password grant",
            with(code_form(&spare), "grant_type", "password"),
            400,
            "unsupported_grant_type",
        ),
        form(
            "implicit grant",
            with(code_form(&spare), "grant_type", "implicit"),
            400,
            "unsupported_grant_type",
        ),
        form(
            "client_credentials grant",
            with(code_form(&spare), "grant_type", "client_credentials"),
            400,
            "unsupported_grant_type",
        ),
        form(
            "device code grant",
            with(
                code_form(&spare),
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code",
            ),
            400,
            "unsupported_grant_type",
        ),
        form(
            "grant_type case change",
            with(code_form(&spare), "grant_type", "Authorization_Code"),
            400,
            "unsupported_grant_type",
        ),
        form(
            "grant_type trailing space",
            with(code_form(&spare), "grant_type", "authorization_code "),
            400,
            "unsupported_grant_type",
        ),
        // --- Client authentication.
        form(
            "no client authentication",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            401,
            "invalid_client",
        ),
        form(
            "unknown client",
            with(code_form(&spare), "client_id", "nobody"),
            401,
            "invalid_client",
        ),
        form(
            "wrong secret",
            with(code_form(&spare), "client_secret", "wrong"),
            401,
            "invalid_client",
        ),
        form(
            "secret case change",
            with(
                code_form(&spare),
                "client_secret",
                &CLIENT_SECRET.to_uppercase(),
            ),
            401,
            "invalid_client",
        ),
        form(
            "secret prefix",
            with(
                code_form(&spare),
                "client_secret",
                &CLIENT_SECRET[..CLIENT_SECRET.len() - 1],
            ),
            401,
            "invalid_client",
        ),
        form(
            "secret with a character appended",
            with(
                code_form(&spare),
                "client_secret",
                &format!("{CLIENT_SECRET}0"),
            ),
            401,
            "invalid_client",
        ),
        form(
            "empty secret for a confidential client",
            with(code_form(&spare), "client_secret", ""),
            401,
            "invalid_client",
        ),
        form(
            "public client with a secret",
            with(
                with(code_form(&spare), "client_id", PUBLIC_CLIENT),
                "client_secret",
                "x",
            ),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic wrong secret",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic(CLIENT_ID, "wrong"),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic unknown client",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic("nobody", CLIENT_SECRET),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic malformed base64",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            Some("Basic %%%not-base64%%%".into()),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic without colon",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(CLIENT_ID)
            )),
            401,
            "invalid_client",
        ),
        basic_case(
            "Bearer scheme",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            Some(format!("Bearer {access_token}")),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic public client with empty secret",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic(PUBLIC_CLIENT, ""),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic and body secret",
            code_form(&spare),
            basic(CLIENT_ID, CLIENT_SECRET),
            400,
            "invalid_request",
        ),
        basic_case(
            "Basic client differs from body client_id",
            with(without(code_form(&spare), "client_secret"), "client_id", "demo-app"),
            basic(CLIENT_ID, CLIENT_SECRET),
            400,
            "invalid_request",
        ),
        // RFC 6749 §2.3.1: each part is form-urlencoded, decoded strictly and taken whole.
        basic_case(
            "Basic secret with a form-style suffix",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic(CLIENT_ID, &format!("{CLIENT_SECRET}&junk=1")),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic secret with a suffix after =",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic(CLIENT_ID, &format!("{CLIENT_SECRET}=")),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic secret with a bare %",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic(CLIENT_ID, &format!("{CLIENT_SECRET}%")),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic secret with a non-hex escape",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic(CLIENT_ID, &format!("{CLIENT_SECRET}%zz")),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic client id with a bad escape",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic("we%b", CLIENT_SECRET),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic without its padding",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic(CLIENT_ID, CLIENT_SECRET).map(|h| h.trim_end_matches('=').to_owned()),
            401,
            "invalid_client",
        ),
        basic_case(
            "Basic with broken padding",
            without(without(code_form(&spare), "client_id"), "client_secret"),
            basic(CLIENT_ID, CLIENT_SECRET).map(|h| h.trim_end_matches('=').to_owned() + "x"),
            401,
            "invalid_client",
        ),
        // --- Authorization code grant.
        form(
            "missing code",
            without(code_form(&spare), "code"),
            400,
            "invalid_request",
        ),
        form("empty code", code_form(""), 400, "invalid_request"),
        form("unknown code", code_form("not-a-code"), 400, "invalid_grant"),
        form(
            "code with a character appended",
            code_form(&format!("{}x", c(0))),
            400,
            "invalid_grant",
        ),
        form(
            "expired code",
            without(code_form("expired-code"), "code_verifier"),
            400,
            "invalid_grant",
        ),
        form(
            "missing redirect_uri",
            without(code_form(&spare), "redirect_uri"),
            400,
            "invalid_request",
        ),
        form(
            "redirect_uri: the client's other registered URI",
            with(
                code_form(&c(1)),
                "redirect_uri",
                "http://127.0.0.1:4000/other?x=1",
            ),
            400,
            "invalid_grant",
        ),
        form(
            "redirect_uri trailing slash",
            with(
                code_form(&c(2)),
                "redirect_uri",
                "http://127.0.0.1:4000/callback/",
            ),
            400,
            "invalid_grant",
        ),
        form(
            "missing code_verifier",
            without(code_form(&c(3)), "code_verifier"),
            400,
            "invalid_grant",
        ),
        form(
            "wrong code_verifier",
            with(code_form(&c(4)), "code_verifier", &"A".repeat(43)),
            400,
            "invalid_grant",
        ),
        form(
            "code_verifier is the challenge",
            with(code_form(&c(5)), "code_verifier", CHALLENGE),
            400,
            "invalid_grant",
        ),
        form(
            "code_verifier with invalid characters",
            with(code_form(&spare), "code_verifier", &"a+/=".repeat(11)),
            400,
            "invalid_request",
        ),
        form(
            "code_verifier 42 characters",
            with(code_form(&spare), "code_verifier", &VERIFIER[..42]),
            400,
            "invalid_request",
        ),
        form(
            "code_verifier 129 characters",
            with(code_form(&spare), "code_verifier", &"a".repeat(129)),
            400,
            "invalid_request",
        ),
        form(
            "code_verifier without a challenge",
            code_form(&no_pkce),
            400,
            "invalid_grant",
        ),
        form(
            "code of another client",
            with(code_form(&c(6)), "client_id", "demo-app"),
            400,
            "invalid_grant",
        ),
        form(
            "public client redeems a confidential client's code",
            with(
                without(code_form(&c(7)), "client_secret"),
                "client_id",
                PUBLIC_CLIENT,
            ),
            400,
            "invalid_grant",
        ),
        form(
            "refresh token used as a code",
            code_form(&rt_other_client),
            400,
            "invalid_grant",
        ),
        // --- Refresh token grant.
        form(
            "client without the refresh grant",
            with(refresh_form(&rt_other_client), "client_id", "code-only"),
            400,
            "unauthorized_client",
        ),
        form(
            "missing refresh_token",
            without(refresh_form("x"), "refresh_token"),
            400,
            "invalid_request",
        ),
        form("unknown refresh_token", refresh_form("nope"), 400, "invalid_grant"),
        form(
            "code used as a refresh token",
            refresh_form(&c(8)),
            400,
            "invalid_grant",
        ),
        form(
            "access token used as a refresh token",
            refresh_form(&access_token),
            400,
            "invalid_grant",
        ),
        form(
            "refresh token of another client",
            with(refresh_form(&rt_other_client), "client_id", "demo-app"),
            400,
            "invalid_grant",
        ),
        form(
            "refresh widening the scope",
            plus(refresh_form(&rt_wide), "scope", "openid write:contacts"),
            400,
            "invalid_scope",
        ),
        form(
            "refresh with an unknown scope",
            plus(refresh_form(&rt_unknown_scope), "scope", "openid admin:all"),
            400,
            "invalid_scope",
        ),
    ];
    assert!(cases.len() >= 40, "{} rows", cases.len());
    println!("{} rows", cases.len());

    for case in &cases {
        let res = send(&s, case).await;
        let status = res.status().as_u16();
        let www = res.headers().get("www-authenticate").cloned();
        assert_eq!(
            res.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{}",
            case.name
        );
        let body: Value = res.json().await.unwrap_or(json!(null));
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["error"], case.error, "{}: {body}", case.name);
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{}: {body}",
            case.name
        );
        for t in ["access_token", "id_token", "refresh_token"] {
            assert!(body.get(t).is_none(), "{}: {t} leaked: {body}", case.name);
        }
        let tried_basic = case.authorization.is_some();
        if status == 401 {
            assert_eq!(
                www.is_some(),
                tried_basic,
                "{}: WWW-Authenticate exactly when the client tried the header",
                case.name
            );
        }
    }

    // Controls: rows failed for their own reason, not because the base request is wrong.
    let res = exchange(&s, &spare).await;
    assert_eq!(res.status(), 200, "the spare code was never redeemed");
    // The Basic scheme is case-insensitive (RFC 7235 §2.1), and escapes decode.
    for scheme in ["BASIC", "basic", "bAsIc"] {
        let code = m.code(&s).await;
        let creds = basic(CLIENT_ID, &CLIENT_SECRET.replace('-', "%2D"))
            .unwrap()
            .replacen("Basic", scheme, 1);
        let res = reqwest::Client::new()
            .post(s.url("/oauth/token"))
            .header("authorization", creds)
            .form(&without(
                without(code_form(&code), "client_id"),
                "client_secret",
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "scheme {scheme}");
    }
    assert_eq!(refresh(&s, &rt_other_client).await.status(), 200);
    assert_eq!(
        refresh(&s, &rt_wide).await.status(),
        200,
        "a refused scope change does not burn the token"
    );
}

/// A wrong PKCE verifier burns the code: a thief with the code gets one guess, not many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pkce_attempt_burns_the_code() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None, "");
    let s = TestServer::start(dir.path()).await;
    let m = Minter::new(&s).await;
    let code = m.code(&s).await;
    let guess = reqwest::Client::new()
        .post(s.url("/oauth/token"))
        .form(&with(code_form(&code), "code_verifier", &"g".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(guess.status(), 400);
    let res = exchange(&s, &code).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

/// Bodies over the 64 KiB limit get an RFC 6749 JSON error, not a bare 413 or a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_an_rfc_error() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), None, "");
    let s = TestServer::start(dir.path()).await;
    for (ctype, body) in [
        (
            "application/x-www-form-urlencoded",
            format!("grant_type=authorization_code&code={}", "a".repeat(70_000)),
        ),
        (
            "application/json",
            format!("{{\"grant_type\":\"{}\"}}", "a".repeat(70_000)),
        ),
    ] {
        let res = reqwest::Client::new()
            .post(s.url("/oauth/token"))
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{ctype}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"], "invalid_request", "{ctype}");
        assert!(v.get("access_token").is_none());
    }
}

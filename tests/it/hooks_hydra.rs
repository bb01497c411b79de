//! Ory Hydra's token hook, `POST /hooks/hydra/token`: recorded request bodies in, the exact
//! answers Hydra understands out (200 with replacement session claims, 204, 403), plus the
//! hook's authentication, body limit and JSON errors.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use claimrules::rules::RuleSet;
use claimrules::server::hooks::{self, HooksConfig};
use claimrules::HotRules;
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "Bearer hydra-hook-secret";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/hooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn rules(src: &str) -> HotRules {
    HotRules::fixed(
        RuleSet::from_sources(
            vec![("hook-rule".into(), src.into())],
            json!({}),
            Default::default(),
        )
        .unwrap(),
    )
}

fn config() -> HooksConfig {
    HooksConfig {
        hydra_api_key: Some(KEY.into()),
        ..HooksConfig::default()
    }
}

async fn call_with(
    hot: HotRules,
    cfg: HooksConfig,
    body: impl Into<Body>,
    header: Option<(&str, &str)>,
    peer: Option<SocketAddr>,
) -> (StatusCode, String) {
    let mut req = Request::post("/hooks/hydra/token").header("content-type", "application/json");
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let mut req = req.body(body.into()).unwrap();
    if let Some(p) = peer {
        req.extensions_mut().insert(ConnectInfo(p));
    }
    let resp = hooks::router(hot, cfg).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn call(src: &str, fixture_name: &str) -> (StatusCode, String) {
    call_with(
        rules(src),
        config(),
        fixture(fixture_name),
        Some(("authorization", KEY)),
        None,
    )
    .await
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn added_claims_answer_200_with_the_new_session_claims() {
    let (status, body) = call(
        r#"
        context.accessToken["https://example.com/client"] = context.clientID;
        context.accessToken["https://example.com/user"] = user.user_id;
        context.accessToken["https://example.com/scopes"] = context.grantedScopes;
        context.accessToken["https://example.com/body"] = context.request.body;
        context.idToken["https://example.com/protocol"] = context.protocol;
        "#,
        "hydra_docs_sample.json",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The JWT-bearer `assertion` in the payload is a credential: rules never see it.
    assert_eq!(
        json_of(&body),
        json!({"session": {
            "access_token": {
                "https://example.com/body": {},
                "https://example.com/client": "app-client",
                "https://example.com/scopes": ["offline", "openid", "hydra.*"],
                "https://example.com/user": "foo"
            },
            "id_token": {"https://example.com/protocol": "oidc-basic-profile"}
        }})
    );
}

#[tokio::test]
async fn existing_claims_are_carried_over_when_a_rule_adds_one() {
    let (status, body) = call(
        r#"
        context.accessToken["https://example.com/roles"] = ["admin"];
        context.accessToken["https://example.com/email"] = user.email;
        context.accessToken["https://example.com/department"] = user.department;
        context.accessToken["https://example.com/tenant"] = user.tenant;
        context.accessToken["https://example.com/aud"] = context.grantedAudience;
        context.accessToken["https://example.com/amr"] = context.authentication.methods;
        "#,
        "hydra_consent_claims.json",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body),
        json!({"session": {
            "access_token": {
                "https://example.com/amr": [{"name": "pwd", "timestamp": 1764150000}],
                "https://example.com/aud": ["https://api.example.com"],
                "https://example.com/department": "R&D",
                "https://example.com/email": "foo@example.com",
                "https://example.com/roles": ["admin"],
                "https://example.com/tenant": "acme",
                "https://example.com/tier": "silver",
                "tenant": "acme"
            },
            "id_token": {
                "department": "R&D",
                "email": "foo@example.com",
                "email_verified": true,
                "https://example.com/tier": "silver",
                "name": "Foo Bar"
            }
        }})
    );
}

#[tokio::test]
async fn a_changed_claim_is_replaced() {
    let (status, body) = call(
        r#"
        context.accessToken["https://example.com/tier"] = "gold";
        context.idToken.name = "Foo B.";
        "#,
        "hydra_consent_claims.json",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body),
        json!({"session": {
            "access_token": {"https://example.com/tier": "gold", "tenant": "acme"},
            "id_token": {
                "department": "R&D",
                "email": "foo@example.com",
                "email_verified": true,
                "https://example.com/tier": "silver",
                "name": "Foo B."
            }
        }})
    );
}

#[tokio::test]
async fn a_claim_set_to_unit_is_removed() {
    let (status, body) = call(
        r#"
        context.accessToken["https://example.com/tier"] = ();
        context.idToken["https://example.com/tier"] = ();
        "#,
        "hydra_consent_claims.json",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body),
        json!({"session": {
            "access_token": {"tenant": "acme"},
            "id_token": {
                "department": "R&D",
                "email": "foo@example.com",
                "email_verified": true,
                "name": "Foo Bar"
            }
        }})
    );
}

#[tokio::test]
async fn no_change_answers_204_without_a_body() {
    // Reads only, and one write of the value the claim already has.
    let (status, body) = call(
        r#"
        if user.email == "nobody@example.com" { deny("nobody"); }
        context.accessToken["https://example.com/tier"] = "silver";
        "#,
        "hydra_consent_claims.json",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, "");
}

#[tokio::test]
async fn a_denial_answers_403() {
    let (status, body) = call(
        r#"if context.clientID == "app-client" { deny("no access for " + user.user_id); }"#,
        "hydra_docs_sample.json",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        json_of(&body),
        json!({"error": "access_denied", "error_description": "no access for foo"})
    );
}

#[tokio::test]
async fn a_script_error_fails_closed_without_internals() {
    let (status, body) = call(r#"let n = 1 + "x" * 2;"#, "hydra_docs_sample.json").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        json_of(&body),
        json!({"error": "server_error", "error_description": "the rules failed"})
    );
}

/// Collects what the code under test logs on this thread.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_scope_rewrite_is_ignored_with_a_warning() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (status, body) = call(
        r#"context.accessToken.scope = ["openid"];"#,
        "hydra_docs_sample.json",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, "");
    let (status, body) = call(
        r#"
        context.accessToken.scope = "openid";
        context.accessToken["https://example.com/x"] = 1;
        "#,
        "hydra_docs_sample.json",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body),
        json!({"session": {"access_token": {"https://example.com/x": 1}, "id_token": {}}})
    );

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("scope"))
        .collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(warnings[0].contains("hook=\"hydra\"") || warnings[0].contains("hook=hydra"));
    assert!(warnings[0].contains("scope=openid"), "{text}");
}

#[tokio::test]
async fn the_grant_type_sets_context_protocol() {
    let src = r#"context.accessToken["https://example.com/p"] = [context.protocol, user.user_id, context.clientID];"#;
    for (file, expected) in [
        (
            "hydra_refresh_token.json",
            json!(["oauth2-refresh-token", "foo", "bar"]),
        ),
        (
            "hydra_client_credentials.json",
            json!(["oauth2-client-credentials", "", "machine-client"]),
        ),
    ] {
        let (status, body) = call(src, file).await;
        assert_eq!(status, StatusCode::OK, "{file}: {body}");
        assert_eq!(
            json_of(&body),
            json!({"session": {"access_token": {"https://example.com/p": expected}, "id_token": {}}}),
            "{file}"
        );
    }
}

#[tokio::test]
async fn a_wrong_or_missing_api_key_answers_401() {
    let expected =
        json!({"error": "unauthorized", "error_description": "missing or invalid credentials"});
    for header in [
        Some(("authorization", "Bearer wrong")),
        Some(("authorization", "Bearer hydra-hook-secret ")),
        Some(("x-api-key", KEY)),
        None,
    ] {
        let (status, body) = call_with(
            rules(""),
            config(),
            fixture("hydra_docs_sample.json"),
            header,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?}");
        assert_eq!(json_of(&body), expected);
    }
}

#[tokio::test]
async fn the_api_key_header_name_is_configurable() {
    let cfg = HooksConfig {
        hydra_api_key: Some("MY API KEY".into()),
        hydra_header: "X-API-Key".into(),
        ..HooksConfig::default()
    };
    let (status, _) = call_with(
        rules(""),
        cfg.clone(),
        fixture("hydra_docs_sample.json"),
        Some(("x-api-key", "MY API KEY")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call_with(
        rules(""),
        cfg,
        fixture("hydra_docs_sample.json"),
        Some(("authorization", "MY API KEY")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_key_the_hook_is_off_unless_loopback_is_allowed() {
    let body = || fixture("hydra_docs_sample.json");
    let (status, _) = call_with(rules(""), HooksConfig::default(), body(), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let loopback = HooksConfig {
        allow_unauthenticated_loopback: true,
        ..HooksConfig::default()
    };
    let local: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let remote: SocketAddr = "10.1.2.3:50000".parse().unwrap();
    let host = Some(("host", "127.0.0.1:3000"));
    let (status, _) = call_with(rules(""), loopback.clone(), body(), host, Some(local)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call_with(rules(""), loopback.clone(), body(), host, Some(remote)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The peer must be known, and the Host must name this machine.
    let (status, _) = call_with(rules(""), loopback.clone(), body(), host, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let evil = Some(("host", "evil.example:3000"));
    let (status, _) = call_with(rules(""), loopback, body(), evil, Some(local)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_oversized_body_answers_413() {
    let mut big = fixture("hydra_docs_sample.json").into_bytes();
    big.resize(hooks::MAX_BODY_BYTES + 1, b' ');
    let (status, body) =
        call_with(rules(""), config(), big, Some(("authorization", KEY)), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        json_of(&body),
        json!({"error": "invalid_request", "error_description": "request body is larger than 1048576 bytes"})
    );
    // Exactly at the limit is fine (trailing whitespace is valid JSON).
    let mut edge = fixture("hydra_docs_sample.json").into_bytes();
    edge.resize(hooks::MAX_BODY_BYTES, b' ');
    let (status, _) = call_with(
        rules(""),
        config(),
        edge,
        Some(("authorization", KEY)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn malformed_json_answers_400_with_the_parser_message() {
    for (input, message) in [
        (
            r#"{"session": "#,
            "malformed JSON: EOF while parsing a value at line 1 column 12",
        ),
        (
            r#"{"session": {}}"#,
            "malformed JSON: missing field `request` at line 1 column 15",
        ),
        (
            r#"{"request": {"granted_scopes": "openid"}}"#,
            "malformed JSON: invalid type: string \"openid\", expected a sequence at line 1 column 39",
        ),
    ] {
        let (status, body) = call_with(
            rules(""),
            config(),
            input.to_owned(),
            Some(("authorization", KEY)),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}");
        assert_eq!(
            json_of(&body),
            json!({"error": "invalid_request", "error_description": message}),
            "{input}"
        );
    }
}

#[tokio::test]
async fn the_hook_runs_the_rule_set_serving_now() {
    let hot = rules(r#"context.accessToken["https://example.com/v"] = 1;"#);
    let v2 = RuleSet::from_sources(
        vec![(
            "hook-rule".into(),
            r#"context.accessToken["https://example.com/v"] = 2;"#.into(),
        )],
        json!({}),
        Default::default(),
    )
    .unwrap();
    let send = |hot: HotRules| {
        call_with(
            hot,
            config(),
            fixture("hydra_docs_sample.json"),
            Some(("authorization", KEY)),
            None,
        )
    };
    let (_, body) = send(hot.clone()).await;
    assert_eq!(
        json_of(&body)["session"]["access_token"]["https://example.com/v"],
        json!(1)
    );
    hot.replace(v2);
    let (_, body) = send(hot.clone()).await;
    assert_eq!(
        json_of(&body)["session"]["access_token"]["https://example.com/v"],
        json!(2)
    );
}

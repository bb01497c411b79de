//! Okta's token inline hook, `POST /hooks/okta/token`: the recorded
//! `com.okta.oauth2.tokens.transform` event in, the exact `commands` (add / replace / remove on
//! `/claims/…`) or `error` answer out, plus authentication, body limit and JSON errors.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use claimrules::rules::RuleSet;
use claimrules::server::hooks::{self, HooksConfig};
use claimrules::HotRules;
use serde_json::{json, Value};
use tower::ServiceExt;

const AUTH: &str = "okta-hook-secret";

fn sample() -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/hooks/okta_docs_sample.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The docs sample with one existing namespaced custom claim on each token, as an Okta
/// authorization server configured with such claims would send.
fn sample_with_custom_claims() -> Value {
    let mut ev = sample();
    ev["data"]["access"]["claims"]["https://example.com/tier"] = json!("silver");
    ev["data"]["identity"]["claims"]["https://example.com/tier"] = json!("silver");
    ev
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
        okta_authorization: Some(AUTH.into()),
        ..HooksConfig::default()
    }
}

async fn call_raw(
    hot: HotRules,
    cfg: HooksConfig,
    body: impl Into<Body>,
    auth: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::post("/hooks/okta/token").header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = hooks::router(hot, cfg)
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn call(src: &str, event: Value) -> Value {
    let (status, body) = call_raw(rules(src), config(), event.to_string(), Some(AUTH)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn added_claims_become_add_commands_with_escaped_paths() {
    let out = call(
        r#"
        context.idToken["https://example.com/patient"] = "1234";
        context.accessToken["https://example.com/roles"] = ["admin"];
        context.accessToken["https://example.com/a~b"] = #{ nested: true };
        "#,
        sample(),
    )
    .await;
    assert_eq!(
        out,
        json!({"commands": [
            {"type": "com.okta.identity.patch", "value": [
                {"op": "add", "path": "/claims/https:~1~1example.com~1patient", "value": "1234"}
            ]},
            {"type": "com.okta.access.patch", "value": [
                {"op": "add", "path": "/claims/https:~1~1example.com~1a~0b", "value": {"nested": true}},
                {"op": "add", "path": "/claims/https:~1~1example.com~1roles", "value": ["admin"]}
            ]}
        ]})
    );
}

#[tokio::test]
async fn the_event_is_mapped_to_an_auth0_shaped_user_and_context() {
    let out = call(
        r#"
        context.accessToken["https://example.com/u"] = #{
            id: user.user_id, email: user.email, name: user.name, given: user.given_name,
            family: user.family_name, zone: user.zoneinfo, login: user.profile.login,
            client: context.clientID, client_name: context.clientName,
            protocol: context.protocol, scopes: context.grantedScopes,
            aud: context.grantedAudience, ip: context.request.ip,
            scope_param: context.request.query.scope, session: context.sessionID,
            methods: context.authentication.methods
        };
        "#,
        sample(),
    )
    .await;
    assert_eq!(
        out,
        json!({"commands": [{"type": "com.okta.access.patch", "value": [{
            "op": "add",
            "path": "/claims/https:~1~1example.com~1u",
            "value": {
                "aud": ["api://default"],
                "client": "customClientIdNative",
                "client_name": "Native client",
                "email": "administrator1@clouditude.net",
                "family": "O'Cloudy Tud",
                "given": "Add-Min",
                "id": "00uq8tMo3zV0OfJON0g3",
                "ip": "127.0.0.1",
                "login": "administrator1@clouditude.net",
                "methods": [{"name": "PASSWORD"}],
                "name": "Add-Min O'Cloudy Tud",
                "protocol": "oidc-basic-profile",
                "scope_param": "openid profile email",
                "scopes": ["email", "openid", "profile"],
                "session": "102Qoe7t5PcRnSxr8j3I8I6pA",
                "zone": "America/Los_Angeles"
            }
        }]}]})
    );
}

#[tokio::test]
async fn changed_claims_become_replace_commands() {
    let out = call(
        r#"
        context.accessToken["https://example.com/tier"] = "gold";
        context.idToken.name = user.given_name;
        "#,
        sample_with_custom_claims(),
    )
    .await;
    assert_eq!(
        out,
        json!({"commands": [
            {"type": "com.okta.identity.patch", "value": [
                {"op": "replace", "path": "/claims/name", "value": "Add-Min"}
            ]},
            {"type": "com.okta.access.patch", "value": [
                {"op": "replace", "path": "/claims/https:~1~1example.com~1tier", "value": "gold"}
            ]}
        ]})
    );
}

#[tokio::test]
async fn removed_claims_become_remove_commands() {
    let out = call(
        r#"
        context.accessToken["https://example.com/tier"] = ();
        context.idToken.preferred_username = ();
        "#,
        sample_with_custom_claims(),
    )
    .await;
    assert_eq!(
        out,
        json!({"commands": [
            {"type": "com.okta.identity.patch", "value": [
                {"op": "remove", "path": "/claims/preferred_username"}
            ]},
            {"type": "com.okta.access.patch", "value": [
                {"op": "remove", "path": "/claims/https:~1~1example.com~1tier"}
            ]}
        ]})
    );
}

#[tokio::test]
async fn okta_system_claims_are_never_touched() {
    // Not namespaced on the access token (Okta's own `cid`, `firstName`): dropped by the
    // namespace rule, so no command names them.
    let out = call(
        r#"
        context.accessToken.cid = "evil";
        context.accessToken.firstName = "Mallory";
        context.idToken.iss = "https://evil.example";
        "#,
        sample(),
    )
    .await;
    assert_eq!(out, json!({"commands": []}));
}

#[tokio::test]
async fn no_change_answers_an_empty_command_list() {
    let out = call(
        r#"
        if user.email == "nobody@example.com" { deny("nobody"); }
        context.accessToken["https://example.com/tier"] = "silver";
        "#,
        sample_with_custom_claims(),
    )
    .await;
    assert_eq!(out, json!({"commands": []}));
}

#[tokio::test]
async fn commands_are_only_sent_for_requested_tokens() {
    let mut ev = sample();
    ev["data"].as_object_mut().unwrap().remove("access");
    let out = call(
        r#"
        context.idToken["https://example.com/a"] = 1;
        context.accessToken["https://example.com/b"] = 2;
        "#,
        ev,
    )
    .await;
    assert_eq!(
        out,
        json!({"commands": [{"type": "com.okta.identity.patch", "value": [
            {"op": "add", "path": "/claims/https:~1~1example.com~1a", "value": 1}
        ]}]})
    );
}

#[tokio::test]
async fn a_denial_answers_an_error_object() {
    let out = call(
        r#"if !user.email.ends_with("@example.com") { deny("only example.com staff"); }"#,
        sample(),
    )
    .await;
    assert_eq!(
        out,
        json!({"error": {"errorSummary": "only example.com staff"}})
    );
}

#[tokio::test]
async fn a_script_error_fails_closed_without_internals() {
    let out = call(r#"let n = 1 + "x" * 2;"#, sample()).await;
    assert_eq!(out, json!({"error": {"errorSummary": "the rules failed"}}));
}

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
async fn a_scope_rewrite_is_not_sent_and_logged_as_a_warning() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let out = call(
        r#"
        context.accessToken.scope = ["openid", "admin"];
        context.accessToken["https://example.com/x"] = 1;
        "#,
        sample(),
    )
    .await;
    assert_eq!(
        out,
        json!({"commands": [{"type": "com.okta.access.patch", "value": [
            {"op": "add", "path": "/claims/https:~1~1example.com~1x", "value": 1}
        ]}]})
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("scope=openid admin"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
}

#[tokio::test]
async fn a_wrong_or_missing_authorization_answers_401() {
    for auth in [Some("wrong"), Some("Bearer okta-hook-secret"), None] {
        let (status, body) = call_raw(rules(""), config(), sample().to_string(), auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"error": "unauthorized", "error_description": "missing or invalid credentials"})
        );
    }
    // No credential configured and no loopback exception: the hook does not exist.
    let (status, _) = call_raw(
        rules(""),
        HooksConfig::default(),
        sample().to_string(),
        Some(AUTH),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_oversized_body_answers_413() {
    let mut big = sample().to_string().into_bytes();
    big.resize(hooks::MAX_BODY_BYTES + 1, b' ');
    let (status, body) = call_raw(rules(""), config(), big, Some(AUTH)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "invalid_request", "error_description": "request body is larger than 1048576 bytes"})
    );
}

#[tokio::test]
async fn malformed_json_or_another_event_type_answers_400() {
    let mut other = sample();
    other["eventType"] = json!("com.okta.import.transform");
    for (input, message) in [
        ("not json".to_owned(), "malformed JSON: expected ident at line 1 column 2"),
        (
            r#"{"eventType": "com.okta.oauth2.tokens.transform"}"#.to_owned(),
            "malformed JSON: missing field `data` at line 1 column 49",
        ),
        (
            other.to_string(),
            "malformed JSON: eventType is \"com.okta.import.transform\", expected \"com.okta.oauth2.tokens.transform\"",
        ),
    ] {
        let (status, body) = call_raw(rules(""), config(), input.clone(), Some(AUTH)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"error": "invalid_request", "error_description": message}),
            "{input}"
        );
    }
}

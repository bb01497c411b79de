//! Discovery, JWKS and userinfo.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::Shared;
use crate::issuer::verify::{verify, VerifyOptions};

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(state): State<Shared>) -> Response {
    let mut res = Json(state.issuer.keys().jwks()).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

/// `GET /.well-known/openid-configuration`, describing exactly what this server does.
pub async fn openid_configuration(State(state): State<Shared>) -> Json<Value> {
    let iss = state.issuer.issuer();
    let mut scopes = vec![
        "openid".to_string(),
        "profile".into(),
        "email".into(),
        "offline_access".into(),
    ];
    for api in &state.config.apis {
        for s in &api.scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
    }
    let alg = state
        .issuer
        .keys()
        .signing()
        .map(|k| k.alg().as_str())
        .unwrap_or("RS256");
    Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}authorize"),
        "token_endpoint": format!("{iss}oauth/token"),
        "userinfo_endpoint": format!("{iss}userinfo"),
        "jwks_uri": format!("{iss}.well-known/jwks.json"),
        "end_session_endpoint": format!("{iss}logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
            "name", "nickname", "given_name", "family_name", "picture", "email", "email_verified"],
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "claims_parameter_supported": false,
    }))
}

/// `GET|POST /userinfo` with a Bearer access token whose audience includes the userinfo URL.
pub async fn userinfo(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let unauthorized = |error: &str, desc: &str| {
        let mut res = (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": error, "error_description": desc})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!(
            "Bearer error=\"{error}\", error_description=\"{desc}\""
        )) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        res
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        // RFC 6750 §3.1: a request without credentials gets a bare challenge.
        let mut res = (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token", "error_description": "a Bearer access token is required"})),
        )
            .into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"claimrules\""),
        );
        return res;
    };
    let opts = VerifyOptions::new(state.issuer.issuer(), state.issuer.userinfo_url())
        .require_scope("openid");
    let jwks = state.issuer.keys().jwks();
    let claims = match verify(token.trim(), &jwks, &opts) {
        Ok(c) => c,
        Err(e) if e.is_insufficient_scope() => {
            let mut res = (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "insufficient_scope", "error_description": "the openid scope is required"})),
            )
                .into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"insufficient_scope\", scope=\"openid\""),
            );
            return res;
        }
        Err(_) => return unauthorized("invalid_token", "the access token is not valid"),
    };
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let Some(user) = state.config.user(sub) else {
        return unauthorized("invalid_token", "the token's subject is unknown");
    };
    let scopes: Vec<&str> = claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    let profile = user.to_rule_user(0);
    let mut out = Map::new();
    out.insert("sub".into(), json!(sub));
    if scopes.contains(&"profile") {
        for k in ["name", "nickname", "given_name", "family_name", "picture"] {
            if let Some(v) = profile.get(k) {
                out.insert(k.into(), v.clone());
            }
        }
    }
    if scopes.contains(&"email") {
        out.insert("email".into(), json!(user.email));
        out.insert("email_verified".into(), json!(user.email_verified));
    }
    let mut res = Json(Value::Object(out)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

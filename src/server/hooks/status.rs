//! `GET /rules/status`: the hot-reload state (version, load time, rule names, last error) for
//! operators, behind an admin bearer token.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::crypto::secret_eq;
use crate::rules::HotRules;

#[derive(Clone)]
struct StatusState {
    rules: HotRules,
    admin_token: Option<String>,
}

/// `GET /rules/status` answering [`crate::rules::RulesStatus`] as JSON to a caller presenting
/// `Authorization: Bearer <admin_token>` (compared in constant time); 401 otherwise. With no
/// admin token configured the endpoint does not exist (404).
pub fn status_router(rules: HotRules, admin_token: Option<String>) -> Router {
    Router::new()
        .route("/rules/status", get(status))
        .with_state(StatusState { rules, admin_token })
}

async fn status(State(st): State<StatusState>, headers: HeaderMap) -> Response {
    let Some(expected) = st.admin_token.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match given {
        Some(token) if secret_eq(token.as_bytes(), expected.as_bytes()) => {
            Json(st.rules.status()).into_response()
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "unauthorized", "error_description": "missing or invalid admin token"})),
        )
            .into_response(),
    }
}

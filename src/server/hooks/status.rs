//! `GET /rules/status`: the hot-reload state (version, load time, rule names, last error) for
//! operators, behind an admin bearer token.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::rules::HotRules;
use crate::server::extract::behind_admin_token;

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
    behind_admin_token(&headers, st.admin_token.as_deref(), || {
        Json(st.rules.status()).into_response()
    })
}

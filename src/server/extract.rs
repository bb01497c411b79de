//! What handlers take from a request beyond axum's own extractors: the client's address, the
//! `context.request` object rules see, and the admin bearer token of the operator endpoints.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::crypto::secret_eq;

/// The socket peer, when the server was started with connect info.
pub(crate) type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// The client IP: the socket peer (proxies' forwarding headers are not trusted by default).
pub(crate) fn client_ip(connect: Option<&ConnectInfo<SocketAddr>>) -> String {
    connect
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `context.request` of a rule run: the given query and body, the client IP, the `Host` name
/// without port, and the `User-Agent`.
pub(crate) fn rule_request(
    headers: &HeaderMap,
    connect: Option<&ConnectInfo<SocketAddr>>,
    query: serde_json::Value,
    body: serde_json::Value,
) -> serde_json::Value {
    let header = |h: axum::http::header::HeaderName| {
        headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("")
    };
    let host = header(axum::http::header::HOST);
    serde_json::json!({
        "query": query,
        "body": body,
        "ip": client_ip(connect),
        "hostname": host.split(':').next().unwrap_or(""),
        "userAgent": header(axum::http::header::USER_AGENT),
    })
}

/// `ok()` for a caller presenting `Authorization: Bearer <admin token>` (any case of `Bearer`,
/// compared in constant time), 401 otherwise; 404 when no admin token is configured, so the
/// endpoint does not exist.
pub(crate) fn behind_admin_token(
    headers: &HeaderMap,
    admin_token: Option<&str>,
    ok: impl FnOnce() -> Response,
) -> Response {
    let Some(expected) = admin_token else {
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
        Some(token) if secret_eq(token.as_bytes(), expected.as_bytes()) => ok(),
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "unauthorized", "error_description": "missing or invalid admin token"})),
        )
            .into_response(),
    }
}

//! What handlers take from a request beyond axum's own extractors: the client's address and the
//! `context.request` object rules see.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::Extension;

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

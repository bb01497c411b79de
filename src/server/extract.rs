//! What handlers take from a request beyond axum's own extractors: the client's address, the
//! `context.request` object rules see, and the admin bearer token of the operator endpoints.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::crypto::secret_eq;

/// The client's address: the socket peer when the server runs with connect info
/// (`into_make_service_with_connect_info`, as `claimrules serve` does), else unknown. Proxies'
/// forwarding headers are not trusted (they are the client's to forge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientIp(Option<SocketAddr>);

impl ClientIp {
    /// The peer recorded in a request's extensions.
    pub(crate) fn from_extensions(extensions: &Extensions) -> ClientIp {
        ClientIp(extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0))
    }

    /// The socket peer, when known.
    pub(crate) fn addr(self) -> Option<SocketAddr> {
        self.0
    }
}

impl fmt::Display for ClientIp {
    /// The IP address, or `unknown` (as `context.request.ip` and the login throttle key it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{}", addr.ip()),
            None => f.write_str("unknown"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientIp, Infallible> {
        Ok(ClientIp::from_extensions(&parts.extensions))
    }
}

/// Whether the `Host` header names this machine: `localhost`, a loopback IPv4 address or
/// `[::1]`, with or without a port; false when it is missing or not text.
pub(crate) fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `context.request` of a rule run: the given query and body, the client IP, the `Host` name
/// without port, and the `User-Agent`.
pub(crate) fn rule_request(
    headers: &HeaderMap,
    ip: ClientIp,
    query: serde_json::Value,
    body: serde_json::Value,
) -> serde_json::Value {
    let header = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let host = header(header::HOST);
    json!({
        "query": query,
        "body": body,
        "ip": ip.to_string(),
        "hostname": host.split(':').next().unwrap_or(""),
        "userAgent": header(header::USER_AGENT),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both users of the check: the hooks' unauthenticated-loopback mode and the playground's
    /// DNS-rebinding guard.
    #[test]
    fn only_loopback_hosts_count_as_this_machine() {
        let check = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            loopback_host(&h)
        };
        for ok in [
            "localhost",
            "LOCALHOST:3000",
            "localhost:1",
            "127.0.0.1",
            "127.0.0.1:3000",
            "[::1]:3000",
            "[::1]:80",
            "127.9.9.9",
        ] {
            assert!(check(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:3000",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::2]",
            "[::2]:1",
            "",
            "10.0.0.1",
            "10.0.0.1:3030",
        ] {
            assert!(!check(bad), "{bad}");
        }
        assert!(!loopback_host(&HeaderMap::new()), "no Host header");
    }
}

//! The token server: an axum router for `/authorize` (login and consent), `/oauth/token`,
//! discovery, JWKS and userinfo ([`router`]); the token hooks ([`hooks`]); operations endpoints
//! ([`telemetry`]); and the assembly of a whole tenant from its configuration ([`setup`]).

mod authorize;
mod discovery;
pub mod errors;
mod extract;
pub mod hooks;
pub mod keys;
mod pages;
pub mod setup;
pub mod state;
pub mod telemetry;
pub mod throttle;
mod token;

// Parsers of untrusted input, public so the fuzz targets and property tests can reach them.
pub use authorize::{validate as validate_authorize_query, AuthzRequest};
pub use setup::{app, open_store, prepare, Prepared, ServeError, ServeOptions, DEFAULT_ADDR};
pub use state::{AppState, RuleSlots, RunSlot, Shared, RULE_RUNS_PER_CLIENT};
pub use token::TokenParams;

pub(crate) use extract::{client_ip, rule_request, Peer};
pub(crate) use state::cpu_bound_thread;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Request};
use axum::routing::{get, post};
use axum::Router;

/// Errors of listening and serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The listener failed.
    #[error("server error: {0}")]
    Io(#[source] std::io::Error),
}

/// The claimrules endpoints, ready to be served or `nest`ed under a prefix by a host app.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/authorize", get(authorize::authorize))
        .route("/login", post(authorize::login))
        .route("/consent", post(authorize::consent))
        .route(
            "/logout",
            get(authorize::logout).post(authorize::logout_confirmed),
        )
        .route("/oauth/token", post(token::token))
        .route("/.well-known/jwks.json", get(discovery::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route(
            "/userinfo",
            get(discovery::userinfo).post(discovery::userinfo),
        )
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// Adds one log line per request (method, path without query, status, latency); never the
/// query, body or headers, which carry codes, tokens and secrets.
pub fn with_request_log(router: Router) -> Router {
    use tower_http::trace::TraceLayer;
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request<_>| {
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
            })
            .on_request(())
            .on_response(
                |res: &axum::http::Response<_>, latency: std::time::Duration, _span: &tracing::Span| {
                    tracing::info!(status = res.status().as_u16(), latency_us = latency.as_micros() as u64, "request");
                },
            ),
    )
}

/// A cookie's value from the request headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, `Secure` when required, and `Path` the
/// server's base path ([`pages::base_path`]: `/`, or the prefix a host app nests it under, so
/// the host's own routes never receive these cookies).
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    max_age: i64,
    secure: bool,
    path: &str,
) -> String {
    format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

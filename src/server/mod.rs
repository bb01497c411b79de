//! The token server: an axum router for `/authorize` (login and consent), `/oauth/token`,
//! discovery, JWKS and userinfo ([`router`]); the token hooks ([`hooks`]); operations endpoints
//! ([`telemetry`]); and the assembly of a whole tenant from its configuration ([`setup`]).

mod authorize;
pub mod cpu;
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
pub use crate::oauth::TokenParams;
pub use authorize::{validate as validate_authorize_query, AuthzRequest};
pub use setup::{app, open_store, prepare, Prepared, ServeError, ServeOptions, DEFAULT_ADDR};
pub use state::{AppState, RuleSlots, RunSlot, Shared, RULE_RUNS_PER_CLIENT};

pub(crate) use extract::{loopback_host, rule_request, ClientIp};
pub(crate) use state::cpu_bound_thread;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
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

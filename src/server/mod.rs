//! The token server: an axum router for `/authorize` (login and consent), `/oauth/token`,
//! discovery, JWKS and userinfo, plus the shared state and the `serve` entry point.

mod authorize;
mod discovery;
pub mod errors;
mod pages;
pub mod throttle;
mod token;

// Parsers of untrusted input, public so the fuzz targets and property tests can reach them.
pub use authorize::{validate as validate_authorize_query, AuthzRequest};
pub use token::TokenParams;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::{HeaderMap, Request};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;

use crate::config::Config;
use crate::issuer::Issuer;
use crate::store::Store;
use throttle::Throttle;

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {message}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        message: String,
    },
    /// The server stopped with an I/O error.
    #[error("server error: {0}")]
    Io(String),
}

/// Everything the handlers share.
pub struct AppState {
    /// The tenant.
    pub config: Arc<Config>,
    /// Persistent state.
    pub store: Store,
    /// Rules and signing.
    pub issuer: Arc<Issuer>,
    /// Login throttling.
    pub throttle: Throttle,
    /// The threads that check passwords.
    pub passwords: crate::password::VerifyPool,
    /// Whether cookies get `Secure` (everything but plain http on loopback).
    pub secure_cookies: bool,
    /// Concurrent rule runs per client.
    pub rule_slots: RuleSlots,
}

/// Marks the calling blocking-pool thread as CPU-bound: on Linux its nice value is raised to 5,
/// once per thread. Rules, signatures and password hashing run for hundreds of microseconds; at
/// a lower priority they give a core up at once to the threads that keep requests moving (the
/// runtime's workers and the SQLite writer's connection thread), which otherwise wait a
/// scheduler slice behind a signature on every hand-off.
pub(crate) fn cpu_bound_thread() {
    #[cfg(target_os = "linux")]
    {
        thread_local! {
            static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        LOWERED.with(|done| {
            if !done.replace(true) {
                // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
                // Failing (e.g. a seccomp filter) only leaves the priority as it was.
                unsafe {
                    let tid = libc::gettid();
                    libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 5);
                }
            }
        });
    }
}

/// Concurrent rule runs allowed per client. Rules run on the bounded blocking pool; a client
/// whose rule loops until its budget could otherwise fill every blocking thread with its own
/// requests and make every other client's login wait behind it.
pub const RULE_RUNS_PER_CLIENT: usize = 2;

/// Per-client limits on concurrent rule runs (client ids come from the configuration, so the
/// map is bounded).
#[derive(Debug, Default)]
pub struct RuleSlots {
    per_client: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl RuleSlots {
    /// Waits (without holding a thread) until `client_id` may run its rules; the permit is held
    /// for the run. `None` only if the lock was poisoned.
    pub async fn acquire(&self, client_id: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.semaphore(client_id)?.acquire_owned().await.ok()
    }

    /// The client's semaphore, made on first use.
    fn semaphore(&self, client_id: &str) -> Option<Arc<tokio::sync::Semaphore>> {
        let mut map = self.per_client.lock().ok()?;
        Some(
            map.entry(client_id.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(RULE_RUNS_PER_CLIENT)))
                .clone(),
        )
    }

    /// Like [`RuleSlots::acquire`], as a slot the run gives up while a rule waits on an API
    /// (`http_get` and friends), so rules waiting on a slow API cannot hold every slot of
    /// their client while logins whose rules call nothing wait behind them.
    pub async fn acquire_slot(&self, client_id: &str) -> Option<Arc<RunSlot>> {
        let sem = self.semaphore(client_id)?;
        let permit = sem.clone().acquire_owned().await.ok()?;
        Some(Arc::new(RunSlot {
            sem,
            permit: std::sync::Mutex::new(Some(permit)),
            runtime: tokio::runtime::Handle::current(),
        }))
    }
}

/// A client's rule-run slot held by one run; released while the run waits on an API and
/// taken again (waiting if need be) before its rules go on.
#[derive(Debug)]
pub struct RunSlot {
    sem: Arc<tokio::sync::Semaphore>,
    permit: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    runtime: tokio::runtime::Handle,
}

impl crate::rules::http::WaitSlot for RunSlot {
    fn release(&self) {
        if let Ok(mut p) = self.permit.lock() {
            p.take();
        }
    }

    fn reacquire(&self) {
        // On the run's blocking-pool thread, outside any async context: blocking is allowed.
        // Never past the run's deadline: without a slot by then, the run goes on only to be
        // stopped at its next operation (the deadline has passed).
        let wait = self.sem.clone().acquire_owned();
        let permit = match crate::rules::run_time_left() {
            Some(left) => self.runtime.block_on(async {
                tokio::time::timeout(left, wait)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }),
            None => self.runtime.block_on(wait).ok(),
        };
        if let Ok(mut p) = self.permit.lock() {
            *p = permit;
        }
    }
}

impl AppState {
    /// State for a tenant; cookies are `Secure` unless the issuer is plain http on loopback.
    pub fn new(config: Arc<Config>, store: Store, issuer: Arc<Issuer>) -> AppState {
        let secure_cookies = !is_plain_http_loopback(&config.issuer);
        let login = &config.login;
        let throttle = Throttle::new(throttle::ThrottleLimits {
            per_account: login.max_failures_per_account_ip,
            per_account_total: login.max_failures_per_account,
            per_ip: login.max_failures_per_ip,
            window: std::time::Duration::from_secs(login.window_seconds),
            concurrent_per_ip: login.max_concurrent_per_ip,
            concurrent_per_account: login.max_concurrent_per_account,
        });
        let passwords = crate::password::VerifyPool::new(login.hash_threads, login.hash_queue);
        AppState {
            config,
            store,
            issuer,
            throttle,
            passwords,
            secure_cookies,
            rule_slots: RuleSlots::default(),
        }
    }
}

fn is_plain_http_loopback(issuer: &str) -> bool {
    url::Url::parse(issuer).is_ok_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    })
}

/// Shared state as handlers see it.
pub type Shared = Arc<AppState>;

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

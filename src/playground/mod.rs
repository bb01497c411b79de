//! `claimrules playground`: a local web page to edit a rule and see its tokens change as you
//! type. The page (static HTML/JS/CSS embedded in the binary, no CDN) talks to the JSON API of
//! [`api`]; the pipeline runs on the blocking pool ([`pipeline`]); "Save as test case" writes
//! `RULES_DIR/tests/playground.toml` ([`case`]).
//!
//! Security ([`access`]): the server binds loopback addresses only; every request must carry
//! the random token of the printed URL (compared in constant time) and a loopback `Host`, so
//! other local users and DNS-rebinding pages get 403 and read or write nothing; paths in
//! requests are relative to the rules folder, without `..` ([`paths`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), claimrules::playground::PlaygroundError> {
//! use claimrules::playground::{serve, PlaygroundOptions};
//! serve(PlaygroundOptions { rules: "rules".into(), addr: "127.0.0.1:3030".parse().unwrap() })
//!     .await
//! # }
//! ```

pub mod access;
pub mod api;
pub mod case;
pub mod paths;
pub mod pipeline;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use access::AccessToken;

/// Address `claimrules playground` listens on by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3030";

/// Most pipeline runs at once (each on a blocking thread); further runs wait their turn.
const MAX_CONCURRENT_RUNS: usize = 2;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const EDITOR_JS: &str = include_str!("assets/editor.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Why the playground did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaygroundError {
    /// The rules path is not a folder.
    #[error("{}: not a folder", .0.display())]
    NotAFolder(PathBuf),
    /// The address is not a loopback address.
    #[error("{0}: the playground listens on loopback addresses only (127.0.0.1, ::1)")]
    NotLoopback(SocketAddr),
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The signed view could not be set up.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    /// The server failed.
    #[error("the server failed: {0}")]
    Io(#[source] std::io::Error),
}

/// Options of [`serve`].
#[derive(Debug, Clone)]
pub struct PlaygroundOptions {
    /// The rules folder.
    pub rules: PathBuf,
    /// A loopback address (port 0 picks a free port).
    pub addr: SocketAddr,
}

/// The state of one playground: its folder, token and signer.
#[derive(Debug)]
pub struct Playground {
    dir: PathBuf,
    token: AccessToken,
    signer: pipeline::Signer,
    /// Serialises writes (rule saves, case appends).
    write_lock: Mutex<()>,
    runs: tokio::sync::Semaphore,
}

impl Playground {
    /// A playground for `dir` with a fresh random token.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Playground, PlaygroundError> {
        Self::with_token(dir, AccessToken::generate())
    }

    /// A playground for `dir` with the given token.
    pub fn with_token(
        dir: impl Into<PathBuf>,
        token: AccessToken,
    ) -> Result<Playground, PlaygroundError> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(PlaygroundError::NotAFolder(dir));
        }
        Ok(Playground {
            dir,
            token,
            signer: pipeline::Signer::new()?,
            write_lock: Mutex::new(()),
            runs: tokio::sync::Semaphore::new(MAX_CONCURRENT_RUNS),
        })
    }

    /// The access token every request must present.
    pub fn token(&self) -> &AccessToken {
        &self.token
    }

    /// The URL to open, for a server listening on `addr`.
    pub fn url(&self, addr: SocketAddr) -> String {
        format!("http://{addr}/?token={}", self.token.as_str())
    }

    /// The page and its API, every route behind the token check.
    pub fn router(self: Arc<Self>) -> Router {
        let token = self.token.clone();
        let page_token = self.token.clone();
        Router::new()
            .route(
                "/",
                get(move || {
                    let html = INDEX_HTML.replace("{{TOKEN}}", page_token.as_str());
                    async move { Html(html) }
                }),
            )
            .route(
                "/assets/app.js",
                get(|| async { asset("text/javascript", APP_JS) }),
            )
            .route(
                "/assets/editor.js",
                get(|| async { asset("text/javascript", EDITOR_JS) }),
            )
            .route(
                "/assets/app.css",
                get(|| async { asset("text/css", APP_CSS) }),
            )
            .route("/api/rules", get(api::rules))
            .route("/api/rule", get(api::rule).put(api::save_rule))
            .route("/api/run", axum::routing::post(api::run))
            .route("/api/inputs", get(api::inputs))
            .route("/api/case", axum::routing::post(api::save_case))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(self)
            .layer(axum::middleware::from_fn_with_state(
                token,
                access::require_token,
            ))
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Binds `opts.addr` (loopback only), prints the URL with its token, serves until Ctrl-C or
/// SIGTERM. Opens no browser.
pub async fn serve(opts: PlaygroundOptions) -> Result<(), PlaygroundError> {
    if !opts.addr.ip().is_loopback() {
        return Err(PlaygroundError::NotLoopback(opts.addr));
    }
    let playground = Arc::new(Playground::new(&opts.rules)?);
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|source| PlaygroundError::Bind {
            addr: opts.addr,
            source,
        })?;
    let local = listener.local_addr().map_err(PlaygroundError::Io)?;
    println!("claimrules playground on {}", playground.url(local));
    println!("  rules: {}", opts.rules.display());
    println!("  loopback only; the token in the URL is required on every request");
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    axum::serve(listener, playground.router())
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(PlaygroundError::Io)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

//! A whole tenant from its configuration: config file (or the embedded default), store, signing
//! keys and hot rules ([`prepare`]), the full router with hooks and operations endpoints
//! ([`app`]), and serving it with its background tasks ([`serve`]). The command line adds the
//! banner and the signals (`src/cli/`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{embedded_default, Config, ConfigError, DemoCredentials};
use crate::issuer::Issuer;
use crate::model::unix_now;
use crate::rules::{HotRules, WatchError};
use crate::rules::{LoadError, RuleSetOptions, SandboxLimits};
use crate::store::{Store, StoreError};

use super::keys::{load_keys, KeysError};
use super::{hooks, keys, telemetry, AppState, ServerError};

/// Errors of start-up and serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[source] StoreError),
    /// Keys could not be loaded or created.
    #[error("signing keys: {0}")]
    Keys(#[from] KeysError),
    /// The rules did not load.
    #[error("rules: {0}")]
    Rules(#[from] LoadError),
    /// The rules folder could not be watched.
    #[error("rules: {0}")]
    Watch(#[from] WatchError),
    /// The listener failed.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// What `serve` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--config`; `None` uses the embedded default.
    pub config: Option<PathBuf>,
    /// `--addr` (default 127.0.0.1:3000).
    pub addr: Option<SocketAddr>,
    /// `--rules` override.
    pub rules: Option<PathBuf>,
    /// `--data` override.
    pub data: Option<PathBuf>,
    /// `--no-watch`: do not hot-reload the rules folder.
    pub no_watch: bool,
}

impl ServeOptions {
    /// The address to listen on: `addr`, else [`DEFAULT_ADDR`].
    pub fn listen_addr(&self) -> SocketAddr {
        self.addr.unwrap_or_else(default_addr)
    }
}

/// Default listen address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";

/// A tenant ready to serve.
pub struct Prepared {
    /// The shared state.
    pub state: Arc<AppState>,
    /// Demo credentials when the embedded default is used.
    pub demo: Option<DemoCredentials>,
    /// The hot rules.
    pub rules: HotRules,
    /// The address it will listen on.
    pub addr: SocketAddr,
}

/// The namespace settings of a tenant: the issuer's host is always reserved.
pub fn rule_options(config: &Config) -> RuleSetOptions {
    let mut reserved = config.reserved_namespaces.clone();
    if let Some(h) = config.issuer_host() {
        reserved.push(h);
    }
    RuleSetOptions {
        limits: SandboxLimits::default(),
        namespace: crate::claims::NamespaceConfig {
            policy: config.namespace_policy,
            reserved_hosts: reserved,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Opens the store of a tenant without serving (for `claimrules keys`).
pub async fn open_store(opts: &ServeOptions) -> Result<(Config, Store), ServeError> {
    let (config, _, store) = open_tenant(opts).await?;
    Ok((config, store))
}

/// Reads the config (file or embedded default, with the `--rules`/`--data` overrides) and opens
/// its store.
async fn open_tenant(
    opts: &ServeOptions,
) -> Result<(Config, Option<DemoCredentials>, Store), ServeError> {
    let addr = opts.listen_addr();
    let (mut config, demo) = match &opts.config {
        Some(path) => (Config::from_file(path)?, None),
        None => {
            let (c, d) = embedded_default(
                &format!("http://{addr}/"),
                opts.rules.clone().unwrap_or_else(|| "rules".into()),
                opts.data.clone().unwrap_or_else(|| "data".into()),
            )?;
            (c, Some(d))
        }
    };
    if let Some(r) = &opts.rules {
        config.rules = r.clone();
    }
    if let Some(d) = &opts.data {
        config.data = d.clone();
    }
    let store = match &config.database_url {
        Some(url) => Store::open(url).await,
        None => Store::open_in_folder(&config.data).await,
    }
    .map_err(ServeError::Store)?;
    Ok((config, demo, store))
}

/// Opens everything a tenant needs.
pub async fn prepare(opts: &ServeOptions) -> Result<Prepared, ServeError> {
    let addr = opts.listen_addr();
    let (config, demo, store) = open_tenant(opts).await?;
    let keys = load_keys(&store, &config).await?;
    let rules = HotRules::load(&config.rules, rule_options(&config))?;
    if !opts.no_watch {
        rules.watch()?;
    }
    let issuer = Arc::new(Issuer::new(&config.issuer, keys, rules.clone()));
    let state = Arc::new(AppState::new(Arc::new(config), store, issuer));
    Ok(Prepared {
        state,
        demo,
        rules,
        addr,
    })
}

fn default_addr() -> SocketAddr {
    DEFAULT_ADDR
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 3000)))
}

/// The full router of a prepared tenant: token server, token hooks and rules status.
pub fn app(prepared: &Prepared) -> axum::Router {
    let cfg = &prepared.state.config;
    let hooks = hooks::HooksConfig {
        hydra_api_key: cfg.hooks.hydra_api_key.clone(),
        hydra_header: cfg
            .hooks
            .hydra_header
            .clone()
            .unwrap_or_else(|| hooks::DEFAULT_HYDRA_HEADER.to_owned()),
        okta_authorization: cfg.hooks.okta_authorization.clone(),
        // Only on explicit opt-in: without it a hook with no secret does not exist (404).
        allow_unauthenticated_loopback: cfg.hooks.insecure_loopback
            && prepared.addr.ip().is_loopback(),
    };
    super::router(prepared.state.clone())
        .merge(hooks::router(prepared.rules.clone(), hooks))
        .merge(hooks::status_router(
            prepared.rules.clone(),
            cfg.admin_token.clone(),
        ))
        .merge(telemetry::router(
            prepared.state.clone(),
            cfg.admin_token.clone(),
        ))
}

/// Binds the listen address of a prepared tenant.
pub async fn bind(prepared: &Prepared) -> Result<TcpListener, ServerError> {
    TcpListener::bind(prepared.addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: prepared.addr,
            source,
        })
}

/// Serves a prepared tenant on `listener` until `shutdown` resolves, with its background tasks:
/// the purge of expired state, the key refresh and, when configured, the separate metrics
/// listener.
pub async fn serve(
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    spawn_purge(prepared.state.clone());
    keys::spawn_refresh(prepared.state.clone());
    if let Some(metrics_addr) = prepared.state.config.metrics_addr {
        let listener =
            TcpListener::bind(metrics_addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: metrics_addr,
                    source,
                })?;
        tracing::info!(addr = %metrics_addr, "metrics listening");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, telemetry::open_metrics_router()).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let app = super::with_request_log(app(&prepared));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(ServerError::Io)?;
    tracing::info!("shut down");
    Ok(())
}

/// How often expired codes, sessions and refresh tokens are deleted.
pub const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes expired state periodically, so the database does not grow without end.
fn spawn_purge(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        loop {
            tick.tick().await;
            match state.store.purge_expired(unix_now()).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "purged expired state"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging expired state failed"),
            }
        }
    });
}

//! `claimrules serve`: assembles config, store, keys, rules and router, prints what a newcomer
//! needs, and serves until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{embedded_default, Config, ConfigError, DemoCredentials};
use crate::issuer::{unix_now, Issuer, KeyRing, SigningKey};
use crate::rules::HotRules;
use crate::rules::{RuleSetOptions, SandboxLimits};
use crate::server::{self, AppState};
use crate::store::{Store, StoredKey};

/// Errors of start-up (all exit with code 2) and serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(String),
    /// Keys could not be loaded or created.
    #[error("signing keys: {0}")]
    Keys(String),
    /// The rules did not load.
    #[error("rules: {0}")]
    Rules(String),
    /// The listener failed.
    #[error(transparent)]
    Server(#[from] server::ServerError),
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

/// Loads the published keys from the store, creating the first one (under the store's key
/// lock, so concurrent instances agree) when there is none.
pub async fn load_keys(store: &Store, config: &Config) -> Result<KeyRing, ServeError> {
    let err = |e: String| ServeError::Keys(e);
    let mut stored = store.keys().await.map_err(|e| err(e.to_string()))?;
    if stored.is_empty() {
        // Generated before taking the lock (RSA generation is slow); another instance may win
        // the race, in which case this key is simply not used.
        let key = SigningKey::generate(config.signing_alg).map_err(|e| err(e.to_string()))?;
        let now = unix_now();
        let candidate = StoredKey {
            kid: key.kid().to_owned(),
            alg: config.signing_alg.as_str().to_owned(),
            private_pkcs8_der: key.pkcs8_der().to_vec(),
            created_at: now,
            activates_at: now,
            retires_at: None,
        };
        let st = store.clone();
        stored = store
            .with_key_lock(|| async move {
                let existing = st.keys().await?;
                if !existing.is_empty() {
                    return Ok(existing);
                }
                st.put_key(&candidate).await?;
                Ok(vec![candidate])
            })
            .await
            .map_err(|e| err(e.to_string()))?;
    }
    key_ring(&stored, unix_now()).map_err(err)
}

/// Builds a ring from stored keys: publishes every key not yet retired; signs with the newest
/// active one.
pub fn key_ring(stored: &[StoredKey], now: i64) -> Result<KeyRing, String> {
    let mut keys: Vec<&StoredKey> = stored
        .iter()
        .filter(|k| k.retires_at.is_none_or(|r| r > now))
        .collect();
    keys.sort_by_key(|k| (k.activates_at, k.created_at));
    let mut published = Vec::with_capacity(keys.len());
    let mut signing = None;
    for (i, k) in keys.iter().enumerate() {
        let alg: crate::config::SigningAlg = k.alg.parse()?;
        let parsed =
            SigningKey::from_pkcs8(alg, &k.private_pkcs8_der).map_err(|e| e.to_string())?;
        if k.activates_at <= now {
            signing = Some(i);
        }
        published.push(Arc::new(parsed));
    }
    Ok(KeyRing::new(published, signing))
}

/// Reloads the keys from the store into the issuer (roll-over, other instances' keys).
pub async fn refresh_keys(state: &AppState) -> Result<(), ServeError> {
    let stored = state
        .store
        .keys()
        .await
        .map_err(|e| ServeError::Keys(e.to_string()))?;
    let ring = key_ring(&stored, unix_now()).map_err(ServeError::Keys)?;
    state.issuer.set_keys(ring);
    Ok(())
}

/// Rolls in a new signing key: published at once, used for signing after `delay` seconds (so
/// JWKS caches pick it up first); the keys it replaces stay published until every token they
/// signed has expired. Returns the new key's `kid`.
pub async fn rotate_keys(store: &Store, config: &Config, delay: i64) -> Result<String, ServeError> {
    let err = |e: String| ServeError::Keys(e);
    let key = SigningKey::generate(config.signing_alg).map_err(|e| err(e.to_string()))?;
    let now = unix_now();
    let existing = store.keys().await.map_err(|e| err(e.to_string()))?;
    // Strictly after every existing key, so "the newest active key signs" is never a tie.
    let latest = existing
        .iter()
        .map(|k| k.activates_at)
        .max()
        .unwrap_or(i64::MIN);
    let activates_at = (now + delay.max(0)).max(latest.saturating_add(1));
    let longest = config
        .apis
        .iter()
        .map(|a| a.token_lifetime)
        .chain(config.clients.iter().map(|c| c.id_token_lifetime))
        .chain(std::iter::once(86_400))
        .max()
        .unwrap_or(86_400) as i64;
    for old in existing {
        if old.retires_at.is_none() {
            store
                .retire_key(&old.kid, activates_at + longest)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
    }
    store
        .put_key(&StoredKey {
            kid: key.kid().to_owned(),
            alg: config.signing_alg.as_str().to_owned(),
            private_pkcs8_der: key.pkcs8_der().to_vec(),
            created_at: now,
            activates_at,
            retires_at: None,
        })
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(key.kid().to_owned())
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
    let addr = opts.addr.unwrap_or_else(default_addr);
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
    .map_err(|e| ServeError::Store(e.to_string()))?;
    Ok((config, demo, store))
}

/// Opens everything a tenant needs.
pub async fn prepare(opts: &ServeOptions) -> Result<Prepared, ServeError> {
    let addr = opts.addr.unwrap_or_else(default_addr);
    let (config, demo, store) = open_tenant(opts).await?;
    let keys = load_keys(&store, &config).await?;
    let rules = HotRules::load(&config.rules, rule_options(&config))
        .map_err(|e| ServeError::Rules(e.to_string()))?;
    if !opts.no_watch {
        rules
            .watch()
            .map_err(|e| ServeError::Rules(e.to_string()))?;
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
    let hooks = crate::hooks::HooksConfig {
        hydra_api_key: cfg.hooks.hydra_api_key.clone(),
        hydra_header: cfg
            .hooks
            .hydra_header
            .clone()
            .unwrap_or_else(|| crate::hooks::DEFAULT_HYDRA_HEADER.to_owned()),
        okta_authorization: cfg.hooks.okta_authorization.clone(),
        // Only on explicit opt-in: without it a hook with no secret does not exist (404).
        allow_unauthenticated_loopback: cfg.hooks.insecure_loopback
            && prepared.addr.ip().is_loopback(),
    };
    server::router(prepared.state.clone())
        .merge(crate::hooks::router(prepared.rules.clone(), hooks))
        .merge(crate::hooks::status_router(
            prepared.rules.clone(),
            cfg.admin_token.clone(),
        ))
        .merge(crate::telemetry::router(
            prepared.state.clone(),
            cfg.admin_token.clone(),
        ))
}

/// Serves until Ctrl-C / SIGTERM; reloads the rules on SIGHUP.
pub async fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let prepared = prepare(&opts).await?;
    let addr = opts.addr.unwrap_or_else(default_addr);
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| server::ServerError::Bind {
                addr,
                message: e.to_string(),
            })?;
    let local = listener
        .local_addr()
        .map_err(|e| server::ServerError::Io(e.to_string()))?;
    let shutdown = shutdown_signal();
    print_banner(&prepared, local);
    spawn_sighup_reload(prepared.rules.clone());
    spawn_purge(prepared.state.clone());
    let st = prepared.state.clone();
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(st.config.key_refresh_interval.max(1));
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = refresh_keys(&st).await {
                tracing::warn!(error = %e, "key refresh failed; keeping the current keys");
            }
        }
    });
    if let Some(metrics_addr) = prepared.state.config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .map_err(|e| server::ServerError::Bind {
                addr: metrics_addr,
                message: e.to_string(),
            })?;
        tracing::info!(addr = %metrics_addr, "metrics listening");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, crate::telemetry::open_metrics_router()).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let app = server::with_request_log(app(&prepared));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|e| server::ServerError::Io(e.to_string()))?;
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

fn print_banner(p: &Prepared, local: SocketAddr) {
    let cfg = &p.state.config;
    println!("claimrules listening on http://{local}");
    println!("  issuer:        {}", cfg.issuer);
    if let Some(c) = cfg.clients.first() {
        println!("  client_id:     {}", c.client_id);
        match &p.demo {
            Some(d) => println!("  client_secret: {}", d.client_secret),
            None => println!("  client_secret: (from the config file)"),
        }
        if let Some(r) = c.redirect_uris.first() {
            println!("  redirect_uri:  {r}");
        }
    }
    if let Some(a) = cfg.apis.first() {
        println!("  audience:      {}", a.identifier);
    }
    if let Some(u) = cfg.users.first() {
        println!("  email:         {}", u.email);
        match &p.demo {
            Some(d) => println!("  password:      {}", d.password),
            None => println!("  password:      (from the config file)"),
        }
    }
    println!(
        "  rules:         {} (version {})",
        cfg.rules.display(),
        p.rules.current().version
    );
    let authorize = format!(
        "{}authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid%20profile%20email%20offline_access%20read:contacts&audience={}&state=xyz",
        cfg.issuer,
        cfg.clients.first().map(|c| c.client_id.as_str()).unwrap_or(""),
        cfg.clients
            .first()
            .and_then(|c| c.redirect_uris.first())
            .map(|r| url::form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>())
            .unwrap_or_default(),
        cfg.apis
            .first()
            .map(|a| url::form_urlencoded::byte_serialize(a.identifier.as_bytes()).collect::<String>())
            .unwrap_or_default(),
    );
    println!("  open:          {authorize}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

fn spawn_sighup_reload(rules: HotRules) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading rules");
            let r = rules.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload()).await;
        }
    });
}

/// Registers the shutdown signals now (before the banner tells anyone the server is up, so an
/// early Ctrl-C is never lost) and resolves when one arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut i), Ok(mut t)) => {
                    tokio::select! {
                        _ = i.recv() => {},
                        _ = t.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! The tenant configuration (`claimrules.toml`, README "Configuration") and the embedded default.
//!
//! Unknown keys are errors that name the key and the line, so typos never pass silently.
//! Secrets may come from the environment (`*_env` keys) instead of the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::claims::NamespacePolicy;

/// Errors of configuration loading.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is not valid (toml's message names the key, line and column).
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, where.
        message: String,
    },
    /// A value is semantically wrong.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file, or "embedded default".
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// Signing algorithm of the issuer (defined with the keys, see [`crate::issuer::SigningAlg`]).
pub use crate::issuer::SigningAlg;

/// `claimrules.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The issuer URL (`iss`), with a trailing slash.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// The rules folder (relative to the config file).
    #[serde(default = "default_rules")]
    pub rules: PathBuf,
    /// The data folder: SQLite database (relative to the config file).
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// `sqlite://...` or `postgres://...`; default: `claimrules.db` in the data folder.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Signing algorithm of new keys.
    #[serde(default)]
    pub signing_alg: SigningAlg,
    /// What to do with claims that break the namespace rule.
    #[serde(default)]
    pub namespace_policy: NamespacePolicy,
    /// Hosts a claim key may not use, besides the issuer's own.
    #[serde(default)]
    pub reserved_namespaces: Vec<String>,
    /// Admin token for `GET /rules/status` (prefer `admin_token_env`).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Environment variable holding the admin token.
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// A separate listener for `GET /metrics` without a token (bind it where only the scraper
    /// reaches); without it, `/metrics` is on the main port behind the admin token.
    #[serde(default)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Require PKCE from every client, not only public ones.
    #[serde(default)]
    pub require_pkce: bool,
    /// Lifetime of authorization codes, seconds.
    #[serde(default = "default_code_lifetime")]
    pub code_lifetime: u64,
    /// Lifetime of login sessions, seconds.
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime: u64,
    /// Lifetime of refresh tokens, seconds (0: no expiry; rotation still applies).
    #[serde(default = "default_refresh_lifetime")]
    pub refresh_token_lifetime: u64,
    /// How often a running server re-reads the signing keys from the store, seconds (so a
    /// `keys rotate` run elsewhere reaches every instance).
    #[serde(default = "default_key_refresh")]
    pub key_refresh_interval: u64,
    /// Token hooks for other servers.
    #[serde(default)]
    pub hooks: HooksSection,
    /// Login throttling and password hashing.
    #[serde(default)]
    pub login: LoginSection,
    /// Registered clients.
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientConfig>,
    /// Registered APIs (audiences).
    #[serde(default, rename = "api")]
    pub apis: Vec<ApiConfig>,
    /// The user directory.
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
}

/// `[hooks]`: credentials of the token-hook callers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    /// API key Hydra sends.
    #[serde(default)]
    pub hydra_api_key: Option<String>,
    /// Environment variable holding Hydra's API key.
    #[serde(default)]
    pub hydra_api_key_env: Option<String>,
    /// The header Hydra sends its key in (default `Authorization`).
    #[serde(default)]
    pub hydra_header: Option<String>,
    /// The Authorization header value Okta sends.
    #[serde(default)]
    pub okta_authorization: Option<String>,
    /// Environment variable holding Okta's Authorization header value.
    #[serde(default)]
    pub okta_authorization_env: Option<String>,
    /// Serve a hook that has no secret without authentication to callers on this machine
    /// (loopback bind, loopback peer and `Host`, no proxy headers). Off by default: a hook with
    /// no secret answers 404.
    #[serde(default)]
    pub insecure_loopback: bool,
}

/// `[login]`: throttling of password logins (see `crate::server::throttle`) and the threads
/// that check passwords (see `crate::password::VerifyPool`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSection {
    /// Failed logins allowed per account from one IP per window.
    #[serde(default = "default_failures_per_account_ip")]
    pub max_failures_per_account_ip: u32,
    /// Failed logins allowed per account from all IPs together per window.
    #[serde(default = "default_failures_per_account")]
    pub max_failures_per_account: u32,
    /// Failed logins allowed per IP (IPv6: per /64) per window.
    #[serde(default = "default_failures_per_ip")]
    pub max_failures_per_ip: u32,
    /// The window, seconds.
    #[serde(default = "default_login_window")]
    pub window_seconds: u64,
    /// Password checks one IP may have in flight at once.
    #[serde(default = "default_login_concurrency")]
    pub max_concurrent_per_ip: u32,
    /// Password checks one account may have in flight at once.
    #[serde(default = "default_login_concurrency")]
    pub max_concurrent_per_account: u32,
    /// Threads that check passwords (0: half the cores, at least one).
    #[serde(default)]
    pub hash_threads: usize,
    /// Password checks that may wait for a hashing thread; more get "busy, try again".
    #[serde(default = "default_hash_queue")]
    pub hash_queue: usize,
}

impl Default for LoginSection {
    fn default() -> Self {
        LoginSection {
            max_failures_per_account_ip: default_failures_per_account_ip(),
            max_failures_per_account: default_failures_per_account(),
            max_failures_per_ip: default_failures_per_ip(),
            window_seconds: default_login_window(),
            max_concurrent_per_ip: default_login_concurrency(),
            max_concurrent_per_account: default_login_concurrency(),
            hash_threads: 0,
            hash_queue: default_hash_queue(),
        }
    }
}

fn default_failures_per_account_ip() -> u32 {
    5
}
fn default_failures_per_account() -> u32 {
    100
}
fn default_failures_per_ip() -> u32 {
    20
}
fn default_login_window() -> u64 {
    300
}
fn default_login_concurrency() -> u32 {
    4
}
fn default_hash_queue() -> usize {
    64
}

/// `[[client]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client id.
    pub client_id: String,
    /// Display name (consent page, `context.clientName`).
    #[serde(default)]
    pub name: Option<String>,
    /// The secret (prefer `client_secret_env`). A client without a secret is public.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Registered redirect URIs, matched byte for byte.
    pub redirect_uris: Vec<String>,
    /// Allowed grants.
    #[serde(default = "default_grants")]
    pub grant_types: Vec<String>,
    /// Skip the consent page.
    #[serde(default)]
    pub first_party: bool,
    /// A native app: loopback redirect URIs match on any port (RFC 8252 §7.3).
    #[serde(default)]
    pub native: bool,
    /// `context.clientMetadata`.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// ID token lifetime, seconds.
    #[serde(default = "default_id_token_lifetime")]
    pub id_token_lifetime: u64,
}

impl ClientConfig {
    /// A client with only an id (for embedding): public, no redirect URIs, the default grants,
    /// no metadata, the default ID token lifetime (10 hours). Fields are public to adjust.
    pub fn new(client_id: impl Into<String>) -> ClientConfig {
        ClientConfig {
            client_id: client_id.into(),
            name: None,
            client_secret: None,
            client_secret_env: None,
            redirect_uris: Vec::new(),
            grant_types: default_grants(),
            first_party: false,
            native: false,
            metadata: Map::new(),
            id_token_lifetime: default_id_token_lifetime(),
        }
    }
}

/// `[[api]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The identifier (`audience`).
    pub identifier: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Scopes it defines.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Whether refresh tokens may be issued for it.
    #[serde(default)]
    pub allow_offline_access: bool,
    /// Access token lifetime, seconds.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime: u64,
}

impl ApiConfig {
    /// An API with only an identifier (for embedding): no declared scopes, no offline access,
    /// the default access token lifetime (24 hours). Fields are public to adjust.
    pub fn new(identifier: impl Into<String>) -> ApiConfig {
        ApiConfig {
            identifier: identifier.into(),
            name: None,
            scopes: Vec::new(),
            allow_offline_access: false,
            token_lifetime: default_token_lifetime(),
        }
    }
}

/// `[[user]]`: the Auth0 user shape plus a password hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// `user_id` (the `sub`).
    pub user_id: String,
    /// Email (login name).
    pub email: String,
    /// Another login name, e.g. "alice".
    #[serde(default)]
    pub username: Option<String>,
    /// Whether the email is verified.
    #[serde(default)]
    pub email_verified: bool,
    /// Full name.
    #[serde(default)]
    pub name: Option<String>,
    /// Nickname.
    #[serde(default)]
    pub nickname: Option<String>,
    /// Given name.
    #[serde(default)]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(default)]
    pub family_name: Option<String>,
    /// Picture URL.
    #[serde(default)]
    pub picture: Option<String>,
    /// Argon2 PHC hash (`claimrules hash-password`).
    pub password_hash: String,
    /// `app_metadata`.
    #[serde(default)]
    pub app_metadata: Map<String, Value>,
    /// `user_metadata`.
    #[serde(default)]
    pub user_metadata: Map<String, Value>,
}

impl UserConfig {
    /// The Auth0-shaped `user` object rules see (no password hash).
    pub fn to_rule_user(&self, logins_count: i64) -> Value {
        let mut u = Map::new();
        u.insert("user_id".into(), Value::String(self.user_id.clone()));
        u.insert("email".into(), Value::String(self.email.clone()));
        u.insert("email_verified".into(), Value::Bool(self.email_verified));
        for (k, v) in [
            ("name", &self.name),
            ("nickname", &self.nickname),
            ("given_name", &self.given_name),
            ("family_name", &self.family_name),
            ("picture", &self.picture),
            ("username", &self.username),
        ] {
            if let Some(v) = v {
                u.insert(k.into(), Value::String(v.clone()));
            }
        }
        u.insert("logins_count".into(), Value::from(logins_count));
        u.insert(
            "app_metadata".into(),
            Value::Object(self.app_metadata.clone()),
        );
        u.insert(
            "user_metadata".into(),
            Value::Object(self.user_metadata.clone()),
        );
        u.insert(
            "identities".into(),
            serde_json::json!([{
                "provider": "auth0",
                "connection": "Username-Password-Authentication",
                "user_id": self.user_id.split('|').next_back().unwrap_or(&self.user_id),
                "isSocial": false
            }]),
        );
        Value::Object(u)
    }
}

fn default_issuer() -> String {
    "http://127.0.0.1:3000/".into()
}
fn default_rules() -> PathBuf {
    "rules".into()
}
fn default_data() -> PathBuf {
    "data".into()
}
fn default_code_lifetime() -> u64 {
    60
}
fn default_session_lifetime() -> u64 {
    8 * 3600
}
fn default_refresh_lifetime() -> u64 {
    30 * 24 * 3600
}
fn default_key_refresh() -> u64 {
    30
}
fn default_grants() -> Vec<String> {
    vec!["authorization_code".into(), "refresh_token".into()]
}
fn default_id_token_lifetime() -> u64 {
    36000
}
fn default_token_lifetime() -> u64 {
    86400
}

impl Config {
    /// Reads and validates a config file; relative folders become relative to the file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.rules.is_relative() {
            cfg.rules = base.join(&cfg.rules);
        }
        if cfg.data.is_relative() {
            cfg.data = base.join(&cfg.data);
        }
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// Checks cross-field rules: unique ids, parseable URLs, secrets resolvable.
    pub fn validate(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let url = url::Url::parse(&self.issuer)
            .map_err(|e| invalid(format!("issuer {:?} is not a URL: {e}", self.issuer)))?;
        if !self.issuer.ends_with('/') {
            self.issuer.push('/');
        }
        if url.host_str().is_none() {
            return Err(invalid("issuer has no host".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &mut self.clients {
            if !seen.insert(c.client_id.clone()) {
                return Err(invalid(format!(
                    "client {:?} is defined twice",
                    c.client_id
                )));
            }
            if let Some(var) = &c.client_secret_env {
                let v = std::env::var(var).map_err(|_| {
                    invalid(format!(
                        "client {:?}: environment variable {var} (client_secret_env) is not set",
                        c.client_id
                    ))
                })?;
                c.client_secret = Some(v);
            }
            for uri in &c.redirect_uris {
                let parsed = url::Url::parse(uri).map_err(|e| {
                    invalid(format!(
                        "client {:?}: redirect_uri {uri:?} is not an absolute URL: {e}",
                        c.client_id
                    ))
                })?;
                // RFC 6749 §3.1.2: "The endpoint URI MUST NOT include a fragment component";
                // the response parameters would otherwise land inside the fragment.
                if uri.contains('#') {
                    return Err(invalid(format!(
                        "client {:?}: redirect_uri {uri:?} has a fragment (#…), which RFC 6749 \
                         §3.1.2 forbids",
                        c.client_id
                    )));
                }
                // RFC 6749 §3.1.2.1 / RFC 9700 §2.6: codes must not travel over plain http,
                // except to this machine (RFC 8252 §7.3 loopback redirects).
                if parsed.scheme() == "http" && !is_loopback_url(&parsed) {
                    tracing::warn!(
                        client_id = %c.client_id,
                        redirect_uri = %uri,
                        "redirect_uri is plain http to another machine: authorization codes \
                         would cross the network unencrypted; use https"
                    );
                }
            }
            for g in &c.grant_types {
                if g != "authorization_code" && g != "refresh_token" {
                    return Err(invalid(format!(
                        "client {:?}: unsupported grant type {g:?}",
                        c.client_id
                    )));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for a in &self.apis {
            if !seen.insert(a.identifier.clone()) {
                return Err(invalid(format!("api {:?} is defined twice", a.identifier)));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            if !seen.insert(u.email.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "user email {:?} is defined twice",
                    u.email
                )));
            }
            if argon2::PasswordHash::new(&u.password_hash).is_err() {
                return Err(invalid(format!(
                    "user {:?}: password_hash is not an Argon2 PHC string (use `claimrules hash-password`)",
                    u.email
                )));
            }
        }
        if let Some(var) = &self.admin_token_env {
            if let Ok(v) = std::env::var(var) {
                if !v.is_empty() {
                    self.admin_token = Some(v);
                }
            }
        }
        if let Some(var) = &self.hooks.hydra_api_key_env {
            if let Ok(v) = std::env::var(var) {
                self.hooks.hydra_api_key = Some(v);
            }
        }
        if let Some(var) = &self.hooks.okta_authorization_env {
            if let Ok(v) = std::env::var(var) {
                self.hooks.okta_authorization = Some(v);
            }
        }
        Ok(())
    }

    /// The client with this id.
    pub fn client(&self, client_id: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    /// The API with this identifier.
    pub fn api(&self, identifier: &str) -> Option<&ApiConfig> {
        self.apis.iter().find(|a| a.identifier == identifier)
    }

    /// The user with this email (case-insensitive) or username.
    pub fn user_by_login(&self, login: &str) -> Option<&UserConfig> {
        let login = login.trim();
        self.users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(login) || u.username.as_deref() == Some(login))
    }

    /// The user with this id.
    pub fn user(&self, user_id: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.user_id == user_id)
    }

    /// The issuer's host, reserved as a claim namespace.
    pub fn issuer_host(&self) -> Option<String> {
        url::Url::parse(&self.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
    }
}

/// Whether `url`'s host is this machine: `localhost` (or a name under `.localhost`), a
/// loopback IPv4 address or `[::1]`.
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Demo credentials of the embedded default, printed on start.
#[derive(Debug, Clone)]
pub struct DemoCredentials {
    /// The demo client's secret.
    pub client_secret: String,
    /// The demo user's password.
    pub password: String,
}

/// The embedded default (README "5-minute tour"): a demo client, a demo API allowing offline access, one
/// demo user. The secret and password are generated once into the data folder and reused.
pub fn embedded_default(
    issuer: &str,
    rules: PathBuf,
    data: PathBuf,
) -> Result<(Config, DemoCredentials), ConfigError> {
    let origin = "embedded default";
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        message,
    };
    crate::datadir::private_folder(&data).map_err(|e| invalid(e.to_string()))?;
    let client_secret = persistent_secret(&data.join("demo-client-secret"), 32)
        .map_err(|e| invalid(e.to_string()))?;
    let password =
        persistent_secret(&data.join("demo-password"), 12).map_err(|e| invalid(e.to_string()))?;
    let password_hash =
        crate::password::hash(&password).map_err(|e| invalid(format!("hashing: {e}")))?;
    let text = format!(
        r#"
issuer = "{issuer}"
admin_token_env = "CLAIMRULES_ADMIN_TOKEN"

[[client]]
client_id = "demo-app"
name = "Demo web app"
redirect_uris = ["http://127.0.0.1:4000/callback", "https://client.example.com/callback"]
grant_types = ["authorization_code", "refresh_token"]
metadata = {{ tier = "gold" }}

[[api]]
identifier = "https://api.example.com"
name = "Demo API"
scopes = ["read:contacts", "write:contacts"]
allow_offline_access = true

[[user]]
user_id = "auth0|demo"
email = "demo@example.com"
username = "demo"
email_verified = true
name = "Demo User"
nickname = "demo"
given_name = "Demo"
family_name = "User"
password_hash = "{password_hash}"
app_metadata = {{ roles = ["admin"], plan = "pro", permissions = ["read:contacts", "write:contacts"] }}
user_metadata = {{ theme = "dark" }}
"#
    );
    let mut cfg: Config = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    cfg.rules = rules;
    cfg.data = data;
    if let Some(c) = cfg.clients.first_mut() {
        c.client_secret = Some(client_secret.clone());
    }
    cfg.validate(origin)?;
    Ok((
        cfg,
        DemoCredentials {
            client_secret,
            password,
        },
    ))
}

/// Reads a secret from `path`, or generates one (base64url of `bytes` random bytes) and saves it
/// in a file created with mode `0600` (never readable by others, not even before a `chmod`). An
/// existing file accessible by group or others is refused.
fn persistent_secret(path: &Path, bytes: usize) -> Result<String, crate::datadir::DataDirError> {
    use std::io::Write;
    let failed = |e: std::io::Error| crate::datadir::DataDirError::Create {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    crate::datadir::check_private(path, crate::datadir::FILE_MODE)?;
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
        // An empty file (an interrupted first start): replace it.
        std::fs::remove_file(path).map_err(failed)?;
    }
    let s = crate::crypto::random_token(bytes);
    match crate::datadir::create_private_file(path).map_err(failed)? {
        Some(mut f) => {
            f.write_all(s.as_bytes()).map_err(failed)?;
            f.sync_all().map_err(failed)?;
            Ok(s)
        }
        // Another process created it meanwhile: use theirs.
        None => {
            let theirs = std::fs::read_to_string(path).map_err(failed)?;
            Ok(theirs.trim().to_owned())
        }
    }
}

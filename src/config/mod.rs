//! The tenant configuration (`claimrules.toml`, README "Configuration") and the embedded default.
//!
//! Unknown keys are errors that name the key and the line, so typos never pass silently.
//! Secrets may come from the environment (`*_env` keys) instead of the file.

mod clients;
mod embedded;
mod sections;
mod users;
mod validate;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::claims::NamespacePolicy;

pub use clients::{ApiConfig, ClientConfig};
pub use embedded::{embedded_default, DemoCredentials};
pub use sections::{HooksSection, LoginSection};
pub use users::UserConfig;
pub use validate::is_loopback_url;

/// Errors of configuration loading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

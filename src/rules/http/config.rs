//! The `[http]` table of `rules.toml`.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[http]` table of `rules.toml`. Without `allow` entries rules cannot call HTTP at all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Host patterns rules may call: `api.example.com`, `*.corp.example`; an `http://` prefix
    /// also allows plain http for that pattern (https only otherwise).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Default timeout of one call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body accepted, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Most calls one pipeline run may make.
    #[serde(default = "default_max_calls")]
    pub max_calls: u32,
    /// Extra trusted root certificates (PEM), relative to the rules folder.
    pub ca_file: Option<PathBuf>,
    /// Allows names that resolve to loopback, private or link-local addresses (tests, labs).
    #[serde(default)]
    pub allow_private: bool,
    /// The pipeline's wall-clock budget when HTTP is configured, in milliseconds
    /// (default [`DEFAULT_HTTP_BUDGET_MS`]); it only ever raises the sandbox's budget.
    pub budget_ms: Option<u64>,
}

/// The pipeline budget of a rule set that may call HTTP, unless `[http] budget_ms` says otherwise:
/// room for two calls at the default timeout.
pub const DEFAULT_HTTP_BUDGET_MS: u64 = 5000;

fn default_timeout_ms() -> u64 {
    2000
}

fn default_max_response_bytes() -> usize {
    1024 * 1024
}

fn default_max_calls() -> u32 {
    10
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow: Vec::new(),
            timeout_ms: default_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
            max_calls: default_max_calls(),
            ca_file: None,
            allow_private: false,
            budget_ms: None,
        }
    }
}

impl HttpConfig {
    /// Whether rules may call HTTP at all.
    pub fn enabled(&self) -> bool {
        !self.allow.is_empty()
    }
}

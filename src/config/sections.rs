//! The `[hooks]` and `[login]` sections of `claimrules.toml`.

use serde::Deserialize;

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

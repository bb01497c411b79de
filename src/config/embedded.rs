//! The embedded default configuration (`claimrules serve` without a config file) and its demo
//! credentials, kept in the data folder.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

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

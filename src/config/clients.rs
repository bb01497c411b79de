//! The `[[client]]` and `[[api]]` entries of `claimrules.toml`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::oauth::GrantType;

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
    pub grant_types: Vec<GrantType>,
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

fn default_grants() -> Vec<GrantType> {
    vec![GrantType::AuthorizationCode, GrantType::RefreshToken]
}
fn default_id_token_lifetime() -> u64 {
    36000
}
fn default_token_lifetime() -> u64 {
    86400
}

//! The checks a configuration passes after parsing: unique ids, URLs, grant types, password
//! hashes, and secrets read from the environment.

use super::{Config, ConfigError};
use crate::oauth::GrantType;

impl Config {
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
                if !matches!(g, GrantType::AuthorizationCode | GrantType::RefreshToken) {
                    return Err(invalid(format!(
                        "client {:?}: unsupported grant type \"{g}\"",
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

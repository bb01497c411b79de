//! The namespace rule, restricted claim names and scope parsing (README "Claims and namespaces"; registered claims per RFC 7519 §4.1 and OpenID Connect Core §2, §5.1).
//!
//! After the rules ran, a custom claim survives only if its key is *namespaced*: an absolute
//! `http://` or `https://` URL with a non-empty host that is not reserved. Registered JWT and
//! protocol claims can never be set by a rule; the ID token also accepts the OIDC profile claims.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Registered JWT and protocol claims that only the issuer sets, on either token.
pub const REGISTERED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "azp",
    "nonce",
    "auth_time",
    "at_hash",
    "c_hash",
    "acr",
    "amr",
    "sid",
    "cnf",
    "client_id",
    "typ",
];

/// OIDC standard profile and email claims a rule may set on the ID token without a namespace.
pub const OIDC_PROFILE_CLAIMS: &[&str] = &[
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "nickname",
    "preferred_username",
    "profile",
    "picture",
    "website",
    "email",
    "email_verified",
    "gender",
    "birthdate",
    "zoneinfo",
    "locale",
    "phone_number",
    "phone_number_verified",
    "address",
    "updated_at",
];

/// Default cap on the JSON size of one token's custom claims (Auth0's 100 KB).
pub const DEFAULT_MAX_CLAIMS_BYTES: usize = 100 * 1024;

/// Errors of the claims module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// `context.accessToken.scope` was neither a string nor an array of valid scope strings.
    #[error("invalid scope: {0}")]
    InvalidScope(String),
}

/// Which token a claim is destined for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenKind {
    /// The access token (`context.accessToken`).
    AccessToken,
    /// The ID token (`context.idToken`).
    IdToken,
}

impl TokenKind {
    /// The name rule authors know the map by (`accessToken` / `idToken`).
    pub fn context_field(self) -> &'static str {
        match self {
            TokenKind::AccessToken => "accessToken",
            TokenKind::IdToken => "idToken",
        }
    }
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenKind::AccessToken => "access token",
            TokenKind::IdToken => "ID token",
        })
    }
}

/// What to do with a custom claim that breaks the namespace rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NamespacePolicy {
    /// Leave the claim out and report a warning naming the rule and key (Auth0's behaviour).
    #[default]
    Drop,
    /// Fail the run with an error naming the rule and key.
    Reject,
}

impl std::str::FromStr for NamespacePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop" => Ok(NamespacePolicy::Drop),
            "reject" => Ok(NamespacePolicy::Reject),
            other => Err(format!(
                "unknown namespace policy {other:?} (drop | reject)"
            )),
        }
    }
}

/// Settings of the namespace rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// Drop or reject claims that break the rule.
    pub policy: NamespacePolicy,
    /// Hosts a claim key may not use (compared case-insensitively; subdomains included).
    pub reserved_hosts: Vec<String>,
    /// Cap on the JSON size of one token's custom claims.
    pub max_claims_bytes: usize,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            policy: NamespacePolicy::Drop,
            reserved_hosts: Vec::new(),
            max_claims_bytes: DEFAULT_MAX_CLAIMS_BYTES,
        }
    }
}

/// Why a claim key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refusal {
    /// A registered JWT or protocol claim that only the issuer sets.
    Registered,
    /// Not an absolute http(s) URL with a host.
    NotNamespaced,
    /// The URL's host is reserved.
    ReservedHost,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Registered => "a registered claim that only the issuer sets",
            Refusal::NotNamespaced => "not namespaced (custom claims need an http(s) URL key)",
            Refusal::ReservedHost => "its namespace host is reserved",
        })
    }
}

/// Returns the host of `key` when it is an absolute `http(s)://` URL with a non-empty host,
/// written without surrounding whitespace.
///
/// Scheme and host compare case-insensitively, as RFC 3986 says they do: `HTTPS://Example.com/x`
/// is namespaced (and kept with its key exactly as written), and a reserved host cannot be dodged
/// by changing its case.
fn namespace_host(key: &str) -> Option<String> {
    if key.is_empty() || key.trim() != key || key.chars().any(char::is_whitespace) {
        return None;
    }
    let lower = key
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let authority = if lower.starts_with("http://") {
        &key[7..]
    } else if lower.starts_with("https://") {
        &key[8..]
    } else {
        return None;
    };
    // The url crate forgives extra slashes (`https:///x` parses with host `x`): judge the key as
    // written, where nothing stands between `//` and the path.
    if authority.is_empty() || authority.starts_with(['/', '\\', '?', '#']) {
        return None;
    }
    let url = url::Url::parse(key).ok()?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return None;
    }
    let host = url.host_str()?;
    if host.is_empty() {
        return None;
    }
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// True when `host` equals a reserved host or is one of its subdomains.
fn is_reserved(host: &str, reserved: &[String]) -> bool {
    reserved.iter().any(|r| {
        let r = r.trim_end_matches('.').to_ascii_lowercase();
        !r.is_empty() && (host == r || host.ends_with(&format!(".{r}")))
    })
}

/// True when `key` is a namespaced claim key whose host is not in `reserved_hosts`.
///
/// ```
/// use claimrules::claims::is_namespaced;
/// assert!(is_namespaced("https://example.com/roles", &[]));
/// assert!(!is_namespaced("roles", &[]));
/// assert!(!is_namespaced("https://auth.example.com/x", &["example.com".into()]));
/// ```
pub fn is_namespaced(key: &str, reserved_hosts: &[String]) -> bool {
    namespace_host(key).is_some_and(|h| !is_reserved(&h, reserved_hosts))
}

/// Checks one claim key destined for `token`; `Ok` when it may be issued.
pub fn check_claim(token: TokenKind, key: &str, reserved_hosts: &[String]) -> Result<(), Refusal> {
    if REGISTERED_CLAIMS.contains(&key) || (token == TokenKind::IdToken && key == "scope") {
        return Err(Refusal::Registered);
    }
    if token == TokenKind::IdToken && OIDC_PROFILE_CLAIMS.contains(&key) {
        return Ok(());
    }
    match namespace_host(key) {
        None => Err(Refusal::NotNamespaced),
        Some(h) if is_reserved(&h, reserved_hosts) => Err(Refusal::ReservedHost),
        Some(_) => Ok(()),
    }
}

/// Parses a rule's `context.accessToken.scope`: an array of non-empty strings without whitespace,
/// or one string split on runs of whitespace.
///
/// ```
/// use claimrules::claims::parse_scope;
/// use serde_json::json;
/// assert_eq!(parse_scope(&json!("read:a  write:b")).unwrap(), vec!["read:a", "write:b"]);
/// assert!(parse_scope(&json!(["read:a", ""])).is_err());
/// ```
pub fn parse_scope(value: &Value) -> Result<Vec<String>, ClaimsError> {
    match value {
        Value::String(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if s.is_empty() => Err(ClaimsError::InvalidScope(format!(
                    "item {i} is an empty string"
                ))),
                Value::String(s) if s.chars().any(char::is_whitespace) => Err(
                    ClaimsError::InvalidScope(format!("item {i} ({s:?}) contains whitespace")),
                ),
                Value::String(s) => Ok(s.clone()),
                other => Err(ClaimsError::InvalidScope(format!(
                    "item {i} is {}, not a string",
                    json_type(other)
                ))),
            })
            .collect(),
        other => Err(ClaimsError::InvalidScope(format!(
            "expected an array of strings or a string, got {}",
            json_type(other)
        ))),
    }
}

/// Splits a space-delimited scope parameter (RFC 6749 §3.3) into its tokens.
pub fn split_scope(scope: &str) -> Vec<String> {
    scope.split_whitespace().map(str::to_owned).collect()
}

/// A JSON value's type name, for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_subdomain_and_case() {
        let reserved = vec!["Example.com".to_string()];
        assert!(!is_namespaced("https://EXAMPLE.com/x", &reserved));
        assert!(!is_namespaced("https://a.example.com/x", &reserved));
        assert!(is_namespaced("https://notexample.com/x", &reserved));
    }

    #[test]
    fn whitespace_and_hostless_keys_are_refused() {
        assert!(!is_namespaced(" https://example.com/x", &[]));
        assert!(!is_namespaced("https://", &[]));
        assert!(!is_namespaced("https:///path", &[]));
        assert!(!is_namespaced("ftp://x/y", &[]));
    }
}

//! Token verification for APIs (the seed's step 4): signature against the JWKS, `alg` against an
//! allow-list, `iss`, `aud`, `exp`/`nbf` with a small leeway, and required scopes.
//!
//! ```
//! use claimrules::issuer::verify::{verify, VerifyOptions};
//! let opts = VerifyOptions::new("https://issuer.example/", "https://api.example.com");
//! let jwks = serde_json::json!({"keys": []});
//! assert!(verify("not.a.jwt", &jwks, &opts).is_err());
//! ```

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The JWKS document is not valid.
    #[error("invalid JWKS: {0}")]
    Jwks(String),
    /// The token is not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token's `alg` is not allowed.
    #[error("algorithm {0} is not allowed")]
    Algorithm(String),
    /// No published key matches the token's `kid`.
    #[error("no key with kid {0:?} in the JWKS")]
    UnknownKey(String),
    /// Signature, issuer, audience or time checks failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A required scope is missing.
    #[error("missing scope {0:?}")]
    MissingScope(String),
}

impl VerifyError {
    /// True when the failure is a missing scope (HTTP 403 `insufficient_scope`, not 401).
    pub fn is_insufficient_scope(&self) -> bool {
        matches!(self, VerifyError::MissingScope(_))
    }
}

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (one of the token's audiences).
    pub audience: String,
    /// Scopes the token's `scope` claim must contain.
    pub required_scopes: Vec<String>,
    /// Allowed algorithms (never `none`, never HMAC).
    pub algorithms: Vec<Algorithm>,
    /// Clock leeway in seconds for `exp` and `nbf`.
    pub leeway: u64,
}

impl VerifyOptions {
    /// Options with RS256, ES256 and EdDSA allowed and a 30 s leeway.
    pub fn new(issuer: &str, audience: &str) -> VerifyOptions {
        VerifyOptions {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            required_scopes: Vec::new(),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            leeway: 30,
        }
    }

    /// Requires a scope.
    pub fn require_scope(mut self, scope: &str) -> VerifyOptions {
        self.required_scopes.push(scope.to_owned());
        self
    }
}

/// Verifies a JWT against a JWKS document and returns its claims.
pub fn verify(
    token: &str,
    jwks: &Value,
    opts: &VerifyOptions,
) -> Result<Map<String, Value>, VerifyError> {
    let set: JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|e| VerifyError::Jwks(e.to_string()))?;
    let header = decode_header(token).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    // HMAC is refused even if listed: a public JWKS key must never act as a shared secret.
    if !opts.algorithms.contains(&header.alg)
        || matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        )
    {
        return Err(VerifyError::Algorithm(format!("{:?}", header.alg)));
    }
    let kid = header.kid.clone().unwrap_or_default();
    let jwk = set
        .find(&kid)
        .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| VerifyError::Jwks(e.to_string()))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&opts.issuer]);
    validation.set_audience(&[&opts.audience]);
    validation.leeway = opts.leeway;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| VerifyError::Invalid(e.to_string()))?;
    let claims = data.claims;
    let granted: Vec<&str> = claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    if let Some(missing) = opts
        .required_scopes
        .iter()
        .find(|s| !granted.contains(&s.as_str()))
    {
        return Err(VerifyError::MissingScope(missing.clone()));
    }
    Ok(claims)
}

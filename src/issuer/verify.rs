//! Token verification for APIs (RFC 9068 §4): signature against the JWKS, `alg` against an
//! allow-list, `iss`, `aud`, `exp`/`nbf` with a small leeway, and required scopes.
//!
//! Parse the issuer's JWKS once into a [`Jwks`] and verify every token against it; a
//! `serde_json::Value` of the document works too, parsed on every call.
//!
//! ```
//! use claimrules::{verify, Jwks, VerifyOptions};
//! let opts = VerifyOptions::new("https://issuer.example/", "https://api.example.com");
//! let jwks = Jwks::from_value(&serde_json::json!({"keys": []})).unwrap();
//! assert!(verify("not.a.jwt", &jwks, &opts).is_err());
//! ```

use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{Cause, SigningAlg};

/// Why a token was refused.
///
/// The variants that wrap a parser's error keep it as their [`source`](std::error::Error::source).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The JWKS document, or the key the token names, is not valid.
    #[error("invalid JWKS: {0}")]
    Jwks(#[source] Cause),
    /// The token is not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(#[source] Cause),
    /// The token's `alg` is not allowed.
    #[error("algorithm {0} is not allowed")]
    Algorithm(String),
    /// No published key matches the token's `kid`.
    #[error("no key with kid {0:?} in the JWKS")]
    UnknownKey(String),
    /// Signature, issuer, audience or time checks failed.
    #[error("invalid token: {0}")]
    Invalid(#[source] Cause),
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
#[non_exhaustive]
pub struct VerifyOptions {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (one of the token's audiences).
    pub audience: String,
    /// Scopes the token's `scope` claim must contain.
    pub required_scopes: Vec<String>,
    /// Allowed algorithms (never `none`, never HMAC: only the asymmetric ones exist here).
    pub algorithms: Vec<SigningAlg>,
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
            algorithms: vec![SigningAlg::RS256, SigningAlg::ES256, SigningAlg::EdDSA],
            leeway: 30,
        }
    }

    /// Requires a scope.
    pub fn require_scope(mut self, scope: &str) -> VerifyOptions {
        self.required_scopes.push(scope.to_owned());
        self
    }

    /// Allows only these algorithms.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = SigningAlg>) -> VerifyOptions {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// The clock leeway for `exp` and `nbf`, in seconds.
    pub fn leeway(mut self, seconds: u64) -> VerifyOptions {
        self.leeway = seconds;
        self
    }
}

/// A JWKS document (RFC 7517 §5) parsed once: its keys ready to check signatures with.
///
/// Build it from the document's JSON ([`Jwks::from_value`], or `"{...}".parse()` for the text an
/// HTTP fetch returns). A key of an unsupported type fails only the tokens that name it.
#[derive(Clone)]
pub struct Jwks {
    document: Value,
    keys: Arc<Vec<(String, Result<DecodingKey, Cause>)>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("Jwks").field("kids", &kids).finish()
    }
}

impl Jwks {
    /// Parses a JWKS document.
    pub fn from_value(document: &Value) -> Result<Jwks, VerifyError> {
        let set: JwkSet =
            serde_json::from_value(document.clone()).map_err(|e| VerifyError::Jwks(Arc::new(e)))?;
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                Some((
                    kid,
                    DecodingKey::from_jwk(jwk).map_err(|e| -> Cause { Arc::new(e) }),
                ))
            })
            .collect();
        Ok(Jwks {
            document: document.clone(),
            keys: Arc::new(keys),
        })
    }

    /// The document as it was given.
    pub fn as_value(&self) -> &Value {
        &self.document
    }

    /// The `kid`s of the keys, in document order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(kid, _)| kid.as_str())
    }

    fn key(&self, kid: &str) -> Result<&DecodingKey, VerifyError> {
        match self.keys.iter().find(|(k, _)| k == kid) {
            None => Err(VerifyError::UnknownKey(kid.to_owned())),
            Some((_, Err(e))) => Err(VerifyError::Jwks(e.clone())),
            Some((_, Ok(key))) => Ok(key),
        }
    }
}

impl std::str::FromStr for Jwks {
    type Err = VerifyError;
    /// Parses the JSON text of a JWKS document.
    fn from_str(text: &str) -> Result<Jwks, VerifyError> {
        let document: Value =
            serde_json::from_str(text).map_err(|e| VerifyError::Jwks(Arc::new(e)))?;
        Jwks::from_value(&document)
    }
}

impl TryFrom<&Value> for Jwks {
    type Error = VerifyError;
    fn try_from(document: &Value) -> Result<Jwks, VerifyError> {
        Jwks::from_value(document)
    }
}

mod sealed {
    /// Keeps [`super::VerificationKeys`] implemented only here.
    pub trait Sealed {}
    impl Sealed for super::Jwks {}
    impl Sealed for serde_json::Value {}
}

/// What [`verify`] takes the keys from: a parsed [`Jwks`], or the JWKS document as a
/// `serde_json::Value` (parsed on every call; parse it once with [`Jwks::from_value`] when
/// verifying many tokens). Implemented by these two types only.
pub trait VerificationKeys: sealed::Sealed {
    /// The parsed set.
    fn jwks(&self) -> Result<std::borrow::Cow<'_, Jwks>, VerifyError>;
}

impl VerificationKeys for Jwks {
    fn jwks(&self) -> Result<std::borrow::Cow<'_, Jwks>, VerifyError> {
        Ok(std::borrow::Cow::Borrowed(self))
    }
}

impl VerificationKeys for Value {
    fn jwks(&self) -> Result<std::borrow::Cow<'_, Jwks>, VerifyError> {
        Jwks::from_value(self).map(std::borrow::Cow::Owned)
    }
}

/// The allow-listed algorithm of a token header; HMAC and `none` never are.
fn allowed(alg: Algorithm, opts: &VerifyOptions) -> Option<SigningAlg> {
    let alg = match alg {
        Algorithm::RS256 => SigningAlg::RS256,
        Algorithm::ES256 => SigningAlg::ES256,
        Algorithm::EdDSA => SigningAlg::EdDSA,
        _ => return None,
    };
    opts.algorithms.contains(&alg).then_some(alg)
}

/// Verifies a JWT against the issuer's keys and returns its claims.
pub fn verify(
    token: &str,
    jwks: &(impl VerificationKeys + ?Sized),
    opts: &VerifyOptions,
) -> Result<Map<String, Value>, VerifyError> {
    let set = jwks.jwks()?;
    let header = decode_header(token).map_err(|e| VerifyError::Malformed(Arc::new(e)))?;
    // HMAC is refused even if listed: a public JWKS key must never act as a shared secret.
    if allowed(header.alg, opts).is_none() {
        return Err(VerifyError::Algorithm(format!("{:?}", header.alg)));
    }
    let kid = header.kid.clone().unwrap_or_default();
    let key = set.key(&kid)?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&opts.issuer]);
    validation.set_audience(&[&opts.audience]);
    validation.leeway = opts.leeway;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = decode::<Map<String, Value>>(token, key, &validation)
        .map_err(|e| VerifyError::Invalid(Arc::new(e)))?;
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

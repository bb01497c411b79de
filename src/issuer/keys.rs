//! Signing keys: generation, the JWS signer, and the public JWKS.
//!
//! Key pairs are parsed once and held for the key's lifetime: jsonwebtoken's aws-lc signer
//! re-parses the DER key on every call, which costs more than half the RSA signing time
//! (measured with `benches/token_exchange.rs`). So the compact JWS is assembled here around aws-lc-rs, and jsonwebtoken is kept
//! for verification.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Cause;
use crate::crypto::b64url;

/// Signing algorithm of the issuer.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[non_exhaustive]
pub enum SigningAlg {
    /// RSA-2048 PKCS#1 v1.5 with SHA-256.
    #[default]
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl SigningAlg {
    /// The JOSE `alg` name (RFC 7518 §3.1, RFC 8037 §3.1).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::RS256 => "RS256",
            SigningAlg::ES256 => "ES256",
            SigningAlg::EdDSA => "EdDSA",
        }
    }
}

impl std::fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SigningAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(SigningAlg::RS256),
            "ES256" => Ok(SigningAlg::ES256),
            "EdDSA" => Ok(SigningAlg::EdDSA),
            other => Err(format!(
                "unknown signing algorithm {other:?} (RS256 | ES256 | EdDSA)"
            )),
        }
    }
}

/// Errors of key handling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Key generation failed.
    #[error("cannot generate a {alg} key")]
    Generate {
        /// The algorithm of the key.
        alg: &'static str,
        /// The crypto library's error.
        #[source]
        source: Cause,
    },
    /// A stored key could not be parsed.
    #[error("stored key {kid} ({alg}) is unusable: {message}")]
    Parse {
        /// Its kid.
        kid: String,
        /// Its algorithm.
        alg: String,
        /// Why.
        message: String,
        /// The crypto library's rejection, when it gave one.
        #[source]
        source: Option<Cause>,
    },
    /// Signing failed.
    #[error("signing failed")]
    Sign(#[source] Cause),
    /// No key is active for signing.
    #[error("no active signing key")]
    NoActiveKey,
}

/// A [`KeyError::Sign`] caused by `e`.
fn sign_err(e: impl std::error::Error + Send + Sync + 'static) -> KeyError {
    KeyError::Sign(Arc::new(e))
}

enum Signer {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A parsed private key with its `kid` and public JWK.
pub struct SigningKey {
    kid: String,
    alg: SigningAlg,
    signer: Signer,
    jwk: Value,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private material.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key: RSA-2048, P-256 or Ed25519.
    pub fn generate(alg: SigningAlg) -> Result<SigningKey, KeyError> {
        let fail = |e: aws_lc_rs::error::Unspecified| KeyError::Generate {
            alg: alg.as_str(),
            source: Arc::new(e),
        };
        let pkcs8 = match alg {
            SigningAlg::RS256 => {
                let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(fail)?;
                kp.as_der().map_err(fail)?.as_ref().to_vec()
            }
            SigningAlg::ES256 => {
                let kp = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(fail)?;
                kp.to_pkcs8v1().map_err(fail)?.as_ref().to_vec()
            }
            SigningAlg::EdDSA => {
                let kp = Ed25519KeyPair::generate().map_err(fail)?;
                kp.to_pkcs8v1().map_err(fail)?.as_ref().to_vec()
            }
        };
        Self::from_pkcs8(alg, &pkcs8)
    }

    /// Parses a PKCS#8 DER private key; the `kid` is the RFC 7638 JWK thumbprint.
    pub fn from_pkcs8(alg: SigningAlg, pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
        let parse_err = |e: aws_lc_rs::error::KeyRejected| KeyError::Parse {
            kid: "?".into(),
            alg: alg.as_str().into(),
            message: e.to_string(),
            source: Some(Arc::new(e)),
        };
        let (signer, mut jwk, thumb_input) = match alg {
            SigningAlg::RS256 => {
                let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8).map_err(parse_err)?;
                let pk = kp.public_key();
                let n = b64url(pk.modulus().big_endian_without_leading_zero());
                let e = b64url(pk.exponent().big_endian_without_leading_zero());
                let thumb = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
                (
                    Signer::Rsa(kp),
                    json!({"kty": "RSA", "n": n, "e": e}),
                    thumb,
                )
            }
            SigningAlg::ES256 => {
                let kp =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                        .map_err(parse_err)?;
                let point = kp.public_key().as_ref();
                // Uncompressed SEC1 point: 0x04 || x || y.
                let (x, y) = match point {
                    [4, rest @ ..] if rest.len() == 64 => {
                        (b64url(&rest[..32]), b64url(&rest[32..]))
                    }
                    _ => {
                        return Err(KeyError::Parse {
                            kid: "?".into(),
                            alg: alg.as_str().into(),
                            message: "unexpected EC public key encoding".into(),
                            source: None,
                        })
                    }
                };
                let thumb = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
                (
                    Signer::Ec(kp),
                    json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                    thumb,
                )
            }
            SigningAlg::EdDSA => {
                let kp = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(parse_err)?;
                let x = b64url(kp.public_key().as_ref());
                let thumb = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                (
                    Signer::Ed(kp),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                    thumb,
                )
            }
        };
        let kid = b64url(&Sha256::digest(thumb_input.as_bytes()));
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), Value::String(kid.clone()));
            obj.insert("use".into(), Value::String("sig".into()));
            obj.insert("alg".into(), Value::String(alg.as_str().into()));
        }
        Ok(SigningKey {
            kid,
            alg,
            signer,
            jwk,
            pkcs8: pkcs8.to_vec(),
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The public JWK (with `kid`, `use`, `alg`).
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// The PKCS#8 DER private key, for storage.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Signs `claims` as a compact JWS with header `{"alg","typ","kid"}`.
    pub fn sign_jwt(&self, typ: &str, claims: &Value) -> Result<String, KeyError> {
        let header = json!({"alg": self.alg.as_str(), "typ": typ, "kid": self.kid});
        let header = serde_json::to_vec(&header).map_err(sign_err)?;
        let payload = serde_json::to_vec(claims).map_err(sign_err)?;
        let mut jws = String::with_capacity(64 + payload.len() * 4 / 3 + 400);
        jws.push_str(&b64url(&header));
        jws.push('.');
        jws.push_str(&b64url(&payload));
        let sig = self.sign(jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&b64url(&sig));
        Ok(jws)
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.signer {
            Signer::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    msg,
                    &mut sig,
                )
                .map_err(sign_err)?;
                Ok(sig)
            }
            Signer::Ec(kp) => kp
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(sign_err),
            Signer::Ed(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
        }
    }

    /// The OIDC `at_hash`/`c_hash` of `value` for this key's algorithm: the left half of the
    /// hash (SHA-256 for RS256/ES256, SHA-512 for Ed25519), base64url.
    pub fn half_hash(&self, value: &str) -> String {
        match self.alg {
            SigningAlg::EdDSA => {
                let d = sha2::Sha512::digest(value.as_bytes());
                b64url(&d[..32])
            }
            _ => {
                let d = Sha256::digest(value.as_bytes());
                b64url(&d[..16])
            }
        }
    }
}

/// The keys of an issuer: the one that signs, and every one that is published.
#[derive(Debug, Default)]
pub struct KeyRing {
    signing: Option<std::sync::Arc<SigningKey>>,
    published: Vec<std::sync::Arc<SigningKey>>,
}

impl KeyRing {
    /// A ring from published keys (newest last) and the index of the signing one.
    pub fn new(published: Vec<std::sync::Arc<SigningKey>>, signing: Option<usize>) -> KeyRing {
        let signing = signing.and_then(|i| published.get(i).cloned());
        KeyRing { signing, published }
    }

    /// A ring of one key that signs.
    pub fn single(key: SigningKey) -> KeyRing {
        let key = std::sync::Arc::new(key);
        KeyRing {
            signing: Some(key.clone()),
            published: vec![key],
        }
    }

    /// The signing key.
    pub fn signing(&self) -> Result<&SigningKey, KeyError> {
        self.signing.as_deref().ok_or(KeyError::NoActiveKey)
    }

    /// The published keys.
    pub fn published(&self) -> &[std::sync::Arc<SigningKey>] {
        &self.published
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.published.iter().map(|k| k.public_jwk().clone()).collect::<Vec<_>>() })
    }
}

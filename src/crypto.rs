//! Small cryptographic helpers shared by the issuer and the server: random tokens, hashes of
//! secrets for storage, the one secret comparison ([`secret_eq`]), PKCE.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A random URL-safe token of `bytes` random bytes (base64url, no padding).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of a secret: what the store keeps instead of codes, refresh tokens and sessions.
pub fn sha256_hex(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two secrets (client secrets, tokens, CSRF values) without leaking where they differ
/// or how long the expected one is: both are hashed with SHA-256 first and the digests compared
/// in constant time, so the time taken depends on neither the contents nor the lengths.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// True when `verifier` is a valid RFC 7636 code verifier: 43–128 characters of
/// `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
pub fn valid_pkce_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// True when `challenge` looks like an S256 challenge (base64url of 32 bytes: 43 characters).
pub fn valid_pkce_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Checks an S256 PKCE verifier against the stored challenge, in constant time.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let computed = b64url(&Sha256::digest(verifier.as_bytes()));
    secret_eq(computed.as_bytes(), challenge.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_example() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(valid_pkce_verifier(verifier));
        assert!(pkce_s256_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_s256_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
    }

    #[test]
    fn secret_eq_compares_contents_of_any_length() {
        assert!(secret_eq(b"s3cret", b"s3cret"));
        assert!(!secret_eq(b"s3cret", b"s3creT"));
        assert!(!secret_eq(b"s3cret", b"s3cret-and-more"));
        assert!(!secret_eq(b"s3cret", b""));
        assert!(!secret_eq(b"", b"x"));
        assert!(secret_eq(b"", b""));
    }
}

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
    let mut out = String::with_capacity(64);
    push_sha256_hex(&mut out, secret);
    out
}

/// Appends the lowercase hex SHA-256 of `secret` to `out`: two table lookups per byte (a
/// `format!` per byte allocated 32 strings per hash, and this runs twice per refresh).
fn push_sha256_hex(out: &mut String, secret: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in Sha256::digest(secret.as_bytes()) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// Hex digits of a refresh token's issue order (the part before its `.`).
const ORDER_DIGITS: usize = 16;

/// A new refresh token: `<order>.<secret>`. The order is 16 lowercase hex digits of the
/// microsecond it was issued (strictly increasing within the process); the secret is 32 random
/// bytes, base64url. The order is no secret (an access token's `iat` tells as much); it is there
/// so that [`refresh_token_key`] grows with time: the store's index on the key then takes every
/// new token at its right edge, on a page the previous rotation already wrote, instead of on a
/// random page of an index as large as the database (issue 18's flatness target; measured in
/// `benches/large_db.rs`).
pub fn new_refresh_token() -> String {
    ordered(32)
}

/// A new refresh family's id: `<order>.<random>`, the order as in [`new_refresh_token`] and 12
/// random bytes (base64url) so that ids made in the same microsecond by several servers sharing
/// a database still differ. Ordered like the tokens, the families' table and its index take
/// every new family at their right edge, and a purge, which walks the families in creation order,
/// deletes neighbours (ids of earlier versions were 16 random bytes, and stay valid).
pub fn new_family_id() -> String {
    ordered(12)
}

/// `<order>.<random>`: [`next_order`] in [`ORDER_DIGITS`] hex digits, then `random_bytes`
/// random bytes in base64url.
fn ordered(random_bytes: usize) -> String {
    format!(
        "{:0width$x}.{}",
        next_order(),
        random_token(random_bytes),
        width = ORDER_DIGITS
    )
}

/// The current microsecond since the epoch, strictly increasing within the process even when
/// the clock stands still or steps back.
fn next_order() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let after = |last: u64| now.max(last.saturating_add(1));
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(after(last))
        })
        .unwrap_or_else(|last| last);
    after(prev)
}

/// The key the store files a refresh token under — never the token itself. For a token of
/// [`new_refresh_token`]: `z`, its order, and the hex SHA-256 of the whole token, so keys sort by
/// issue order and after every key of an earlier version (hex digits sort before `z` in every
/// collation). For any other string, a token of an earlier version (43 characters of base64url)
/// included: the hex SHA-256 alone, as those were filed.
pub fn refresh_token_key(token: &str) -> String {
    match token.split_once('.') {
        Some((order, _))
            if order.len() == ORDER_DIGITS
                && order
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            let mut key = String::with_capacity(1 + ORDER_DIGITS + 64);
            key.push('z');
            key.push_str(order);
            push_sha256_hex(&mut key, token);
            key
        }
        _ => sha256_hex(token),
    }
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
    fn refresh_tokens_are_filed_in_issue_order_after_earlier_versions_keys() {
        let tokens: Vec<String> = (0..1000).map(|_| new_refresh_token()).collect();
        let keys: Vec<String> = tokens.iter().map(|t| refresh_token_key(t)).collect();
        for (t, k) in tokens.iter().zip(&keys) {
            let (order, secret) = t.split_once('.').expect("order.secret");
            assert_eq!(order.len(), 16);
            assert_eq!(secret.len(), 43);
            assert!(!k.contains(secret), "the key must not hold the secret");
            assert_eq!(k.len(), 81);
            assert_eq!(
                refresh_token_key(t),
                *k,
                "the key is a function of the token"
            );
        }
        // Strictly increasing: every key sorts after the one issued before it.
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // An earlier version's token (random base64url) keeps its key, and every such key sorts
        // before every new one.
        for _ in 0..100 {
            let old = random_token(32);
            assert_eq!(refresh_token_key(&old), sha256_hex(&old));
            assert!(refresh_token_key(&old) < keys[0]);
        }
        // Two tokens with the same order but different secrets get different keys.
        let (order, _) = tokens[0].split_once('.').unwrap();
        let forged = format!("{order}.{}", random_token(32));
        assert_ne!(refresh_token_key(&forged), keys[0]);
    }

    #[test]
    fn family_ids_are_ordered_like_the_tokens_made_beside_them() {
        let mut made = Vec::new();
        for _ in 0..500 {
            made.push(new_family_id());
            made.push(new_refresh_token());
        }
        let orders: Vec<&str> = made
            .iter()
            .map(|m| m.split_once('.').expect("order.random").0)
            .collect();
        assert!(orders.iter().all(|o| o.len() == 16));
        // One clock for both: every order is after the one made before it.
        assert!(orders.windows(2).all(|w| w[0] < w[1]));
        let families: Vec<&String> = made.iter().step_by(2).collect();
        assert!(families.windows(2).all(|w| w[0] < w[1]));
        for f in families {
            let (_, random) = f.split_once('.').unwrap();
            assert_eq!(random.len(), 16, "{f}");
            assert!(random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')));
        }
    }

    #[test]
    fn strings_that_only_look_like_refresh_tokens_are_hashed_whole() {
        for s in [
            "",
            ".",
            "0123.abc",
            "0123456789ABCDEF.secret",
            "0123456789abcdeg.secret",
            "0123456789abcdef0.secret",
            "z0123456789abcdef.secret",
        ] {
            assert_eq!(refresh_token_key(s), sha256_hex(s), "{s:?}");
        }
        assert!(refresh_token_key("0123456789abcdef.").starts_with("z0123456789abcdef"));
    }

    #[test]
    fn sha256_hex_is_lowercase_hex_of_the_digest() {
        // FIPS 180-2 appendix B.1 ("abc") and the empty string.
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
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

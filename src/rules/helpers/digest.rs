//! `sha256`, `hmac_sha256` and `hmac_sha256_base64`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rhai::{Engine, NativeCallContext};
use sha2::{Digest, Sha256};

use super::bounds::fits;
use super::encoding::B64;
use super::{fail, hex, Res};

/// Registers the digests.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "sha256",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            fits(&ctx, "sha256", 64)?;
            Ok(hex(&Sha256::digest(text.as_bytes())))
        },
    );
    fn hmac(ctx: &NativeCallContext, name: &str, key: &str, text: &str) -> Res<Vec<u8>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
            .map_err(|e| fail(ctx, name, format!("invalid key: {e}")))?;
        mac.update(text.as_bytes());
        Ok(mac.finalize().into_bytes().to_vec())
    }
    engine.register_fn(
        "hmac_sha256",
        |ctx: NativeCallContext, key: &str, text: &str| -> Res<String> {
            fits(&ctx, "hmac_sha256", 64)?;
            Ok(hex(&hmac(&ctx, "hmac_sha256", key, text)?))
        },
    );
    engine.register_fn(
        "hmac_sha256_base64",
        |ctx: NativeCallContext, key: &str, text: &str| -> Res<String> {
            fits(&ctx, "hmac_sha256_base64", 44)?;
            Ok(B64.encode(hmac(&ctx, "hmac_sha256_base64", key, text)?))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::super::tests::eval;

    #[test]
    fn sha256_known_vectors() {
        // RFC 6234's TEST1 ("abc") and the empty message.
        assert_eq!(
            eval(r#"sha256("abc")"#),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            eval(r#"sha256("")"#),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hmac_rfc4231_test_case_2() {
        assert_eq!(
            eval(r#"hmac_sha256("Jefe", "what do ya want for nothing?")"#),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            eval(r#"hmac_sha256_base64("Jefe", "what do ya want for nothing?")"#),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }
}

//! Random ids: `uuid` (version 4) and `random_hex`.

use rand::RngCore;
use rhai::{Engine, NativeCallContext};

use super::bounds::fits;
use super::{fail, hex, Res};

/// Most bytes `random_hex` draws.
const MAX_RANDOM_BYTES: i64 = 1024;

/// Registers `uuid` and `random_hex`.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("uuid", |ctx: NativeCallContext| -> Res<String> {
        fits(&ctx, "uuid", 36)?;
        // A version 4 UUID (RFC 9562 §5.4) from rand's thread-local CSPRNG (seeded from the
        // OS), as `random_hex` and `crypto::random_token` use: no system call per id.
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        Ok(uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string())
    });
    engine.register_fn(
        "random_hex",
        |ctx: NativeCallContext, bytes: i64| -> Res<String> {
            let n = usize::try_from(bytes)
                .ok()
                .filter(|n| (1..=MAX_RANDOM_BYTES as usize).contains(n))
                .ok_or_else(|| {
                    fail(
                        &ctx,
                        "random_hex",
                        format!("bytes must be from 1 to {MAX_RANDOM_BYTES}, got {bytes}"),
                    )
                })?;
            fits(&ctx, "random_hex", n * 2)?;
            let mut buf = vec![0u8; n];
            rand::rng().fill_bytes(&mut buf);
            Ok(hex(&buf))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_errors, eval};

    #[test]
    fn uuid_and_random_hex() {
        let ids = eval("[uuid(), uuid()]");
        let re = regex::Regex::new(
            "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        )
        .unwrap();
        let (a, b) = (ids[0].as_str().unwrap(), ids[1].as_str().unwrap());
        assert!(re.is_match(a) && re.is_match(b), "{ids}");
        assert_ne!(a, b);
        let hexes = eval("[random_hex(1), random_hex(16), random_hex(16), random_hex(1024)]");
        let lens: Vec<usize> = hexes
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().len())
            .collect();
        assert_eq!(lens, [2, 32, 32, 2048]);
        assert_ne!(hexes[1], hexes[2]);
        assert!(hexes.as_array().unwrap().iter().all(|h| h
            .as_str()
            .unwrap()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())));
        assert_errors(
            "random_hex",
            &["random_hex(0)", "random_hex(1025)", "random_hex(-1)"],
        );
    }
}

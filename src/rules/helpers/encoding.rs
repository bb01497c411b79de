//! Base64 (RFC 4648 §4, §5) and percent-encoding as JavaScript's `encodeURIComponent` /
//! `decodeURIComponent`: `base64_encode`, `base64_decode`, `base64url_encode`,
//! `base64url_decode`, `url_encode`, `url_decode`.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{Config as _, DecodePaddingMode};
use base64::Engine as _;
use rhai::{Engine, NativeCallContext};

use super::bounds::fits;
use super::{fail, quote, Res};

/// Standard base64 (RFC 4648 §4): padded output, padding optional on input.
pub(super) const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// URL-safe base64 (RFC 4648 §5): unpadded output, padding optional on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether `c` stays as it is in JavaScript's `encodeURIComponent`: the unreserved characters
/// of RFC 2396 §2.3, alphanumerics and the marks `-_.!~*'()`.
fn uri_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&c)
}

fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(encoded_url_len(text));
    for &b in text.as_bytes() {
        if uri_unreserved(b) {
            out.push(char::from(b));
        } else {
            const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
    }
    out
}

fn encoded_url_len(text: &str) -> usize {
    text.bytes()
        .map(|b| if uri_unreserved(b) { 1 } else { 3 })
        .sum()
}

/// Like `decodeURIComponent`: every `%XX` becomes its byte, nothing else changes (`+` stays),
/// and the bytes must be UTF-8. Because the literal characters around the escapes are whole
/// UTF-8 characters, checking the decoded bytes as a whole refuses exactly what JavaScript
/// refuses.
fn url_decode(text: &str) -> Result<String, String> {
    fn digit(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes
                .get(i + 1)
                .and_then(|&h| digit(h))
                .zip(bytes.get(i + 2).and_then(|&l| digit(l)));
            let Some((hi, lo)) = pair else {
                return Err(format!(
                    "malformed escape at byte {i}: `%` must be followed by two hex digits"
                ));
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the escapes do not decode to UTF-8".to_owned())
}

/// Registers the encodings.
pub(super) fn register(engine: &mut Engine) {
    fn encode(
        ctx: &NativeCallContext,
        name: &str,
        b64: &GeneralPurpose,
        text: &str,
    ) -> Res<String> {
        let len =
            base64::encoded_len(text.len(), b64.config().encode_padding()).unwrap_or(usize::MAX);
        fits(ctx, name, len)?;
        Ok(b64.encode(text.as_bytes()))
    }
    fn decode(
        ctx: &NativeCallContext,
        name: &str,
        b64: &GeneralPurpose,
        text: &str,
    ) -> Res<String> {
        let bytes = b64.decode(text.as_bytes()).map_err(|e| {
            fail(
                ctx,
                name,
                format!("{} is not valid base64: {e}", quote(text)),
            )
        })?;
        fits(ctx, name, bytes.len())?;
        String::from_utf8(bytes).map_err(|_| fail(ctx, name, "the decoded bytes are not UTF-8"))
    }
    engine.register_fn(
        "base64_encode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            encode(&ctx, "base64_encode", &B64, text)
        },
    );
    engine.register_fn(
        "base64_decode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            decode(&ctx, "base64_decode", &B64, text)
        },
    );
    engine.register_fn(
        "base64url_encode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            encode(&ctx, "base64url_encode", &B64URL, text)
        },
    );
    engine.register_fn(
        "base64url_decode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            decode(&ctx, "base64url_decode", &B64URL, text)
        },
    );
    engine.register_fn(
        "url_encode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            fits(&ctx, "url_encode", encoded_url_len(text))?;
            Ok(url_encode(text))
        },
    );
    engine.register_fn(
        "url_decode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            let out = url_decode(text).map_err(|e| fail(&ctx, "url_decode", e))?;
            fits(&ctx, "url_decode", out.len())?;
            Ok(out)
        },
    );
}

#[cfg(test)]
mod tests {
    use crate::rules::SandboxLimits;

    use super::super::tests::{assert_errors, caught, eval};

    #[test]
    fn base64_rfc4648_vectors() {
        // RFC 4648 §10.
        let vectors = [
            ("", "", ""),
            ("f", "Zg==", "Zg"),
            ("fo", "Zm8=", "Zm8"),
            ("foo", "Zm9v", "Zm9v"),
            ("foob", "Zm9vYg==", "Zm9vYg"),
            ("fooba", "Zm9vYmE=", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ];
        for (plain, padded, unpadded) in vectors {
            assert_eq!(eval(&format!("base64_encode({plain:?})")), padded);
            assert_eq!(eval(&format!("base64url_encode({plain:?})")), unpadded);
            for encoded in [padded, unpadded] {
                assert_eq!(eval(&format!("base64_decode({encoded:?})")), plain);
                assert_eq!(eval(&format!("base64url_decode({encoded:?})")), plain);
            }
        }
        // The two alphabets differ in the last two characters (RFC 4648 §4, §5).
        assert_eq!(
            eval(r#"base64_encode("~~~") + base64_encode("???")"#),
            "fn5+Pz8/"
        );
        assert_eq!(
            eval(r#"base64url_encode("~~~") + base64url_encode("???")"#),
            "fn5-Pz8_"
        );
        assert_eq!(eval(r#"base64url_decode("fn5-Pz8_")"#), "~~~???");
        assert_eq!(
            eval(r#"base64_decode(base64_encode("héllo wörld ✓"))"#),
            "héllo wörld ✓"
        );
    }

    #[test]
    fn base64_errors() {
        assert_errors(
            "base64_decode",
            &[
                r#"base64_decode("Zm9v!")"#,
                r#"base64_decode("fn5-")"#,
                r#"base64_decode("Z")"#,
                r#"base64_decode("/w==")"#,
            ],
        );
        assert_errors(
            "base64url_decode",
            &[r#"base64url_decode("fn5+")"#, r#"base64url_decode("_w")"#],
        );
        let msgs = caught(&[r#"base64_decode("/w==")"#], SandboxLimits::default());
        assert_eq!(msgs, ["base64_decode: the decoded bytes are not UTF-8"]);
    }

    #[test]
    fn url_encoding_like_javascript() {
        // encodeURIComponent leaves exactly A-Z a-z 0-9 - _ . ! ~ * ' ( ) alone.
        assert_eq!(
            eval(r#"url_encode("a b&c=d/é?!'()*~-_.+%")"#),
            "a%20b%26c%3Dd%2F%C3%A9%3F!'()*~-_.%2B%25"
        );
        assert_eq!(
            eval(r#"url_decode("a%20b%26c%3dd%2F%C3%A9%3F!'()*~-_.%2B%25+")"#),
            "a b&c=d/é?!'()*~-_.+%+"
        );
        assert_eq!(eval(r#"url_decode(url_encode("€ ✓ x=y&z"))"#), "€ ✓ x=y&z");
        assert_errors(
            "url_decode",
            &[
                r#"url_decode("%")"#,
                r#"url_decode("abc%4")"#,
                r#"url_decode("%zz")"#,
                r#"url_decode("%C3")"#,
                r#"url_decode("%C3%28")"#,
                r#"url_decode("%C3é")"#,
            ],
        );
    }
}

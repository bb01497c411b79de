//! `jwt_sign`: HMAC-signed JWTs (RFC 7515, RFC 7518 §3.2), with a text, base64 or base64url
//! key.

use rhai::{Dynamic, Engine, NativeCallContext};

use super::bounds::{bound, fits, too_long, Capped};
use super::json::{write_json, Json};
use super::{fail, quote, Res};

fn jwt_algorithm(alg: &str) -> Option<(jsonwebtoken::Algorithm, usize)> {
    use jsonwebtoken::Algorithm::{HS256, HS384, HS512};
    match alg {
        "HS256" => Some((HS256, 32)),
        "HS384" => Some((HS384, 48)),
        "HS512" => Some((HS512, 64)),
        _ => None,
    }
}

/// Registers `jwt_sign`.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "jwt_sign",
        |ctx: NativeCallContext, claims: Dynamic, key: &str, alg: &str| -> Res<String> {
            jwt_sign(&ctx, &claims, key.as_bytes(), alg)
        },
    );
    // `jwt_sign(claims, key, alg, #{ key_encoding: "base64" })`: Auth0 client secrets and
    // many SSO secrets are base64 of random bytes (the auth0/rules `jwt` template signs with
    // `new Buffer(secret, 'base64')`), which no text string can hold.
    engine.register_fn(
        "jwt_sign",
        |ctx: NativeCallContext,
         claims: Dynamic,
         key: &str,
         alg: &str,
         options: rhai::Map|
         -> Res<String> {
            let name = "jwt_sign";
            let mut encoding = "text".to_owned();
            for (k, v) in &options {
                match (k.as_str(), v.clone().into_string()) {
                    ("key_encoding", Ok(e)) => encoding = e,
                    ("key_encoding", Err(t)) => {
                        return Err(fail(
                            &ctx,
                            name,
                            format!("key_encoding must be a string, got {t}"),
                        ))
                    }
                    (other, _) => {
                        return Err(fail(
                            &ctx,
                            name,
                            format!(
                                "unknown option {}; the one option is key_encoding",
                                quote(other)
                            ),
                        ))
                    }
                }
            }
            use base64::Engine as _;
            let bytes = match encoding.as_str() {
                "text" => key.as_bytes().to_vec(),
                "base64" => base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(key.trim_end_matches('='))
                    .map_err(|e| fail(&ctx, name, format!("the key is not base64: {e}")))?,
                "base64url" => base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.trim_end_matches('='))
                    .map_err(|e| fail(&ctx, name, format!("the key is not base64url: {e}")))?,
                other => {
                    return Err(fail(
                        &ctx,
                        name,
                        format!(
                            "key_encoding {} is not one of text, base64, base64url",
                            quote(other)
                        ),
                    ))
                }
            };
            jwt_sign(&ctx, &claims, &bytes, alg)
        },
    );
}

/// `jwt_sign(claims, key, alg)`: a compact JWS (RFC 7515 §7.1) with header
/// `{"typ":"JWT","alg":alg}`, signed with HMAC (RFC 7518 §3.2).
fn jwt_sign(ctx: &NativeCallContext, claims: &Dynamic, key: &[u8], alg: &str) -> Res<String> {
    let name = "jwt_sign";
    let Some((algorithm, sig_len)) = jwt_algorithm(alg) else {
        return Err(fail(
            ctx,
            name,
            format!(
                "unsupported algorithm {} (HS256, HS384 or HS512)",
                quote(alg)
            ),
        ));
    };
    if !claims.is_map() {
        return Err(fail(
            ctx,
            name,
            format!(
                "the claims must be a map, got {}",
                ctx.engine().map_type_name(claims.type_name())
            ),
        ));
    }
    if key.is_empty() {
        return Err(fail(ctx, name, "the key is empty"));
    }
    let header = jsonwebtoken::Header::new(algorithm);
    let header_len = serde_json::to_vec(&header)
        .map(|h| h.len())
        .map_err(|e| fail(ctx, name, e))?;
    // Count the claims' JSON first: the token is refused before anything large is built.
    let max = bound(ctx.engine().max_string_size());
    let mut counted = Capped::new(max, false);
    if let Err(e) = write_json(ctx.engine(), claims, &mut counted) {
        return Err(if counted.over {
            too_long(ctx, name)
        } else {
            fail(ctx, name, e)
        });
    }
    let b64 = |n: usize| base64::encoded_len(n, false).unwrap_or(usize::MAX);
    let len = b64(header_len)
        .saturating_add(b64(counted.len))
        .saturating_add(b64(sig_len))
        .saturating_add(2);
    fits(ctx, name, len)?;
    let json = Json {
        value: claims,
        engine: ctx.engine(),
        depth: 0,
    };
    let token = jsonwebtoken::encode(&header, &json, &jsonwebtoken::EncodingKey::from_secret(key))
        .map_err(|e| fail(ctx, name, e))?;
    fits(ctx, name, token.len())?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use crate::rules::SandboxLimits;
    use serde_json::{json, Value};

    use super::super::tests::{assert_errors, eval, set_with, X};

    #[test]
    fn jwt_sign_takes_a_base64_key() {
        use base64::Engine as _;
        let raw = [0xabu8, 0xcd, 0xef, 0x12, 0x34, 0x56, 0x78, 0x90, 0xff, 0x00];
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        for (enc, key) in [
            ("base64", b64.clone()),
            ("base64", b64.trim_end_matches('=').to_owned()),
            (
                "base64url",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
            ),
        ] {
            let out = set_with(
                &format!(
                    r#"context.accessToken["{X}"] = jwt_sign(#{{ sub: "u1" }}, "{key}", "HS256", #{{ key_encoding: "{enc}" }});"#
                ),
                SandboxLimits::default(),
            )
            .run(json!({}), json!({}))
            .unwrap();
            let token = out.access_token[X].as_str().unwrap();
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            v.required_spec_claims.clear();
            v.validate_exp = false;
            let data = jsonwebtoken::decode::<Value>(
                token,
                &jsonwebtoken::DecodingKey::from_secret(&raw),
                &v,
            )
            .unwrap();
            assert_eq!(data.claims["sub"], "u1", "{enc}");
        }
        for (opts, want) in [
            (r#"#{ key_encoding: "hex" }"#, "is not one of"),
            (r#"#{ encoding: "base64" }"#, "unknown option"),
        ] {
            let err = set_with(
                &format!(r#"jwt_sign(#{{}}, "a2V5", "HS256", {opts});"#),
                SandboxLimits::default(),
            )
            .run(json!({}), json!({}))
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = set_with(
            r#"jwt_sign(#{}, "!!!", "HS256", #{ key_encoding: "base64" });"#,
            SandboxLimits::default(),
        )
        .run(json!({}), json!({}))
        .unwrap_err()
        .to_string();
        assert!(err.contains("not base64"), "{err}");
    }

    #[test]
    fn jwt_sign_verifies_with_jsonwebtoken() {
        use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
        for (alg, algorithm) in [
            ("HS256", Algorithm::HS256),
            ("HS384", Algorithm::HS384),
            ("HS512", Algorithm::HS512),
        ] {
            let token = eval(&format!(
                r#"jwt_sign(#{{ sub: "u1", n: 1, exp: 4102444800, roles: ["a", "b"], x: () }}, "s3cret", "{alg}")"#
            ));
            let token = token.as_str().unwrap();
            let header = decode_header(token).unwrap();
            assert_eq!(header.alg, algorithm);
            assert_eq!(header.typ.as_deref(), Some("JWT"));
            let data = decode::<Value>(
                token,
                &DecodingKey::from_secret(b"s3cret"),
                &Validation::new(algorithm),
            )
            .unwrap();
            assert_eq!(
                data.claims,
                json!({"sub": "u1", "n": 1, "exp": 4102444800_u64, "roles": ["a", "b"], "x": null})
            );
            assert!(decode::<Value>(
                token,
                &DecodingKey::from_secret(b"other"),
                &Validation::new(algorithm)
            )
            .is_err());
        }
        assert_errors(
            "jwt_sign",
            &[
                r#"jwt_sign(#{}, "k", "RS256")"#,
                r#"jwt_sign(#{}, "k", "none")"#,
                r#"jwt_sign(#{}, "k", "hs256")"#,
                r#"jwt_sign("claims", "k", "HS256")"#,
                r#"jwt_sign(#{}, "", "HS256")"#,
                r#"jwt_sign(#{ f: |x| x }, "k", "HS256")"#,
            ],
        );
    }
}

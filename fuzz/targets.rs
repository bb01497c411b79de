//! The bodies of the fuzz targets, shared by the cargo-fuzz harnesses (`fuzz/fuzz_targets/`), the
//! seeded property test and the corpus replay (`tests/fuzz_corpus_replay.rs`). Each target takes
//! arbitrary bytes, must never panic, and checks an invariant that would reveal a wrong answer:
//! a parser that accepts what it should refuse, or an authorization request redirected to a URI
//! the client never registered.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine as _;
use claimrules::config::SigningAlg;
use claimrules::issuer::keys::SigningKey;
use claimrules::issuer::verify::{verify, VerifyOptions};
use claimrules::rules::{RuleSet, RuleSetOptions};
use claimrules::server::errors::AuthorizeError;
use claimrules::server::{validate_authorize_query, AppState, TokenParams};
use serde_json::{json, Value};

/// A target: arbitrary bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// The targets by name, as the corpus folders are named.
pub const TARGETS: [(&str, Target); 7] = [
    ("token_params", token_params),
    ("authorize_query", authorize_query),
    ("rules_load", rules_load),
    ("pipeline", pipeline),
    ("jwt_verify", jwt_verify),
    ("jwks_verify", jwks_verify),
    ("hook_bodies", hook_bodies),
];

/// The project's folder: the manifest folder for the project's own tests, its parent for the
/// fuzz crate in `fuzz/`.
fn project_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if here.join("rules").is_dir() {
        here
    } else {
        here.join("..")
    }
}

/// A scratch folder for this process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("claimrules-fuzz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

// ---------------------------------------------------------------------------------------------
// /oauth/token body parsing.

/// First byte: the content type; the rest: the body.
pub fn token_params(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ctype = match sel % 5 {
        0 => Some("application/x-www-form-urlencoded"),
        1 => Some("application/json"),
        2 => None,
        3 => Some("application/json; charset=utf-8"),
        _ => Some("text/plain"),
    };
    match TokenParams::parse(ctype, body) {
        Ok(_) => {
            let form = matches!(sel % 5, 0 | 2);
            assert!(form || matches!(sel % 5, 1 | 3), "text/plain accepted");
            if form {
                // Accepted form bodies are UTF-8 and repeat no parameter (RFC 6749 §3.2).
                assert!(std::str::from_utf8(body).is_ok(), "non-UTF-8 form accepted");
                let mut seen = std::collections::HashSet::new();
                for (k, _) in url::form_urlencoded::parse(body) {
                    assert!(seen.insert(k.into_owned()), "repeated parameter accepted");
                }
            } else {
                let v: Value = serde_json::from_slice(body).expect("accepted JSON parses");
                assert!(v.is_object(), "non-object JSON accepted");
            }
        }
        Err(e) => assert_eq!(e.code, "invalid_request", "{e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// /authorize query parsing.

const REDIRECT: &str = "http://127.0.0.1:4000/callback";

/// A tenant with a confidential, a public and a native client.
fn authorize_state() -> &'static std::sync::Arc<AppState> {
    static STATE: OnceLock<std::sync::Arc<AppState>> = OnceLock::new();
    STATE.get_or_init(|| {
        let dir = scratch("authorize");
        let hash = claimrules::password::hash("fuzz-password").expect("hash");
        let rules = project_dir().join("rules");
        let text = format!(
            r#"
issuer = "http://127.0.0.1:9/"
rules = "{rules}"
data = "data"

[[client]]
client_id = "web"
client_secret = "web-secret-0123456789"
redirect_uris = ["{REDIRECT}", "http://127.0.0.1:4000/other?x=1"]

[[client]]
client_id = "spa"
redirect_uris = ["{REDIRECT}"]
first_party = true

[[client]]
client_id = "native"
native = true
redirect_uris = ["http://127.0.0.1/cb", "com.example.app:/oauth"]

[[api]]
identifier = "https://api.example.com"
scopes = ["read:contacts"]
allow_offline_access = true

[[user]]
user_id = "auth0|fuzz"
email = "fuzz@example.com"
password_hash = "{hash}"
"#,
            rules = rules.display().to_string().replace('\\', "\\\\"),
        );
        let path = dir.join("claimrules.toml");
        std::fs::write(&path, text).expect("config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let prepared = rt
            .block_on(claimrules::server::prepare(
                &claimrules::server::ServeOptions {
                    config: Some(path),
                    no_watch: true,
                    ..Default::default()
                },
            ))
            .expect("tenant prepares");
        // The store's pool lives on this runtime; validation never touches the store.
        std::mem::forget(rt);
        prepared.state
    })
}

/// True when `uri` may receive a redirect for `client_id`: registered byte for byte, or for the
/// native client a registered loopback URI with another port.
fn trusted(state: &AppState, client_id: &str, uri: &str) -> bool {
    let Some(client) = state.config.client(client_id) else {
        return false;
    };
    if client.redirect_uris.iter().any(|r| r == uri) {
        return true;
    }
    if !client.native {
        return false;
    }
    let Ok(mut u) = url::Url::parse(uri) else {
        return false;
    };
    let loopback = u.host_str() == Some("127.0.0.1") || u.host_str() == Some("[::1]");
    let _ = u.set_port(None);
    loopback
        && u.scheme() == "http"
        && client
            .redirect_uris
            .iter()
            .any(|r| url::Url::parse(r).is_ok_and(|r| r.as_str() == u.as_str()))
}

/// The raw query string.
pub fn authorize_query(data: &[u8]) {
    let state = authorize_state();
    let raw = String::from_utf8_lossy(data);
    let client_of = |raw: &str| {
        url::form_urlencoded::parse(raw.as_bytes())
            .find(|(k, _)| k == "client_id")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    match validate_authorize_query(state, &raw) {
        Ok(req) => {
            assert!(
                trusted(state, req.client_id(), req.redirect_uri()),
                "accepted an untrusted redirect_uri {:?} for {:?}",
                req.redirect_uri(),
                req.client_id()
            );
        }
        Err(AuthorizeError::Redirect { redirect_uri, .. }) => {
            assert!(
                trusted(state, &client_of(&raw), &redirect_uri),
                "error redirected to an untrusted URI {redirect_uri:?}"
            );
        }
        // A page is shown on this server, never redirected: nothing to check.
        Err(AuthorizeError::Page { .. }) => {}
        Err(other) => panic!("an authorization error of no known kind: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Rule-set loading (rules.toml + Rhai) and the pipeline.

/// `rules.toml` text, a line `%%`, then the source of `a.rhai` (no `%%`: the whole input is the
/// source and there is no manifest). A set that loads is also run once.
pub fn rules_load(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (manifest, source) = match text.split_once("\n%%\n") {
        Some((m, s)) => (Some(m), s),
        None => (None, text.as_ref()),
    };
    let dir = scratch("rules");
    let _ = std::fs::remove_file(dir.join("rules.toml"));
    if let Some(m) = manifest {
        std::fs::write(dir.join("rules.toml"), m).expect("write manifest");
    }
    std::fs::write(dir.join("a.rhai"), source).expect("write rule");
    if let Ok(set) = RuleSet::load_with(&dir, RuleSetOptions::default()) {
        let _ = set.run(example("user.json"), example("context.json"));
    }
}

fn example(name: &str) -> Value {
    let path = project_dir().join("examples").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("example")).expect("JSON")
}

fn sample_rules() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        RuleSet::load_with(project_dir().join("rules"), RuleSetOptions::default())
            .expect("sample rules load")
    })
}

/// JSON: `{"user": …, "context": …}` runs as given; any other JSON value runs as the user with
/// the example context. The sample rules must answer, never panic, and an answer that is not
/// an error carries only namespaced custom claims.
pub fn pipeline(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (user, context) = match v {
        Value::Object(mut m) if m.contains_key("user") && m.contains_key("context") => (
            m.remove("user").unwrap_or_default(),
            m.remove("context").unwrap_or_default(),
        ),
        other => (other, example("context.json")),
    };
    if let Ok(outcome) = sample_rules().run(user, context) {
        for key in outcome.access_token.keys() {
            assert!(
                key == "scope" || claimrules::claims::is_namespaced(key, &[]),
                "non-namespaced claim {key:?} kept"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JWT verification.

/// A P-256 key made for the fuzz corpus only (it signs nothing anywhere else).
const FUZZ_KEY_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOFpN4t+dHo5HzqsIFssyU4FEK05sEBXoMf4R+GOAUjOhRANCAATmb/R/zgXs3RDZvlinn65LERQ22cygl8lGQYZiIOt5V0L1FxZ/0jq58mJgvo31WndtsZSTzX9gpUdsp9Xi9zqX";
/// The issuer and audience of the corpus tokens.
pub const ISS: &str = "https://issuer.fuzz/";
/// The audience of the corpus tokens.
pub const AUD: &str = "https://api.fuzz";

/// The fuzz key.
pub fn fuzz_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let der = base64::engine::general_purpose::STANDARD
            .decode(FUZZ_KEY_PKCS8)
            .expect("base64");
        SigningKey::from_pkcs8(SigningAlg::ES256, &der).expect("key")
    })
}

/// The fuzz key's JWKS.
pub fn fuzz_jwks() -> Value {
    json!({"keys": [fuzz_key().public_jwk()]})
}

/// A valid token for the corpus (expires in 2100).
pub fn fuzz_token(extra: Value) -> String {
    let mut claims = json!({"iss": ISS, "aud": AUD, "sub": "auth0|fuzz", "iat": 1_700_000_000,
        "exp": 4_102_444_800_i64, "scope": "read:contacts"});
    if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
        c.extend(e);
    }
    fuzz_key().sign_jwt("at+jwt", &claims).expect("sign")
}

/// The token text, verified against the fuzz JWKS: whatever it accepts passed every check.
pub fn jwt_verify(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    if let Ok(claims) = verify(&token, &fuzz_jwks(), &VerifyOptions::new(ISS, AUD)) {
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISS));
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == AUD,
            Some(Value::Array(a)) => a.iter().any(|x| x == AUD),
            _ => false,
        };
        assert!(aud_ok, "accepted a token for another audience");
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        assert!(exp > 1_700_000_000, "accepted an expired token");
        let head: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap_or(""))
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(head["alg"], "ES256", "accepted another algorithm");
    }
}

/// A JWKS document (JSON) used to verify a valid corpus token: a wrong key set must not verify.
pub fn jwks_verify(data: &[u8]) {
    let Ok(jwks) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let token = fuzz_token(json!({}));
    if verify(&token, &jwks, &VerifyOptions::new(ISS, AUD)).is_ok() {
        // Only the fuzz key's public coordinates can verify its signature.
        let jwk = fuzz_key().public_jwk();
        let has_key = jwks["keys"]
            .as_array()
            .is_some_and(|ks| ks.iter().any(|k| k["x"] == jwk["x"] && k["y"] == jwk["y"]));
        assert!(has_key, "a JWKS without the key verified the token");
    }
}

// ---------------------------------------------------------------------------------------------
// Token hook bodies (Hydra, Okta).

/// First byte even: a Hydra token-hook body, odd: an Okta inline-hook event. A body that parses
/// is mapped to Auth0-shaped `user` / `context` objects and run through the sample rules.
pub fn hook_bodies(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (user, context) = if sel % 2 == 0 {
        let Ok(req) =
            serde_json::from_slice::<claimrules::server::hooks::hydra::TokenHookRequest>(body)
        else {
            return;
        };
        let m = claimrules::server::hooks::hydra::map_request(&req, &[]);
        (m.user, m.context)
    } else {
        let Ok(ev) =
            serde_json::from_slice::<claimrules::server::hooks::okta::TokenHookEvent>(body)
        else {
            return;
        };
        let (user, context, _, _) = claimrules::server::hooks::okta::map_event(&ev, &[]);
        (user, context)
    };
    assert!(
        user.is_object() && context.is_object(),
        "mapping lost its shape"
    );
    assert!(
        user["user_id"].is_string(),
        "user_id must always be a string"
    );
    let _ = sample_rules().run(user, context);
}

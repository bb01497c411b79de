//! The README's embedding examples against the lean build: `cargo test --no-default-features
//! --test lean` (scripts/test) compiles and runs them with claimrules built without its server,
//! store and command line (Cargo.toml `[features]`).
//!
//! Each README block of "Use it from your token server" → "Rust" is preceded by a comment
//! `<!-- compiled: FILE#NAME -->` and appears in FILE between `// README begin: NAME` and
//! `// README end`, unchanged (indentation aside): [`readme_blocks_are_the_compiled_ones`]
//! checks that. The blocks of this file run here; the one of the full server is compiled in
//! tests/it/embedding.rs.

use std::error::Error;
use std::path::Path;

use serde_json::json;

type Result<T = (), E = Box<dyn Error>> = std::result::Result<T, E>;

#[test]
fn readme_claims_only() -> Result {
    // README begin: claims-only
    use claimrules::{Context, Endpoint, RuleSet, User};
    use serde_json::json;

    let rules = RuleSet::load("rules")?; // once, at start (Send + Sync)
    let user = User::new("auth0|42")
        .email("eddie@example.com")
        .email_verified(true)
        .app_metadata(json!({"roles": ["editor"]}));
    let context = Context::login("my-app") // protocol oidc-basic-profile
        .audience("https://api.example.com")
        .query(json!({"scope": "openid read:contacts write:contacts"}))
        .ip("203.0.113.7");
    let outcome = match rules.run(user.into(), context.into()) {
        Ok(outcome) => outcome,
        // access_denied with the rule's message, or server_error; log `e` (rule, line, column)
        Err(e) => return Err(e.oauth_error(Endpoint::Authorize).into()),
    };
    // Merge outcome.access_token / outcome.id_token into your claims (yours win); the token's
    // scope is outcome.scope when a rule rewrote it, else the requested one.
    let scope = outcome.scope.unwrap_or_default();
    // README end
    assert_eq!(scope, ["openid", "read:contacts"]);
    assert_eq!(
        outcome.access_token["https://example.com/roles"],
        json!(["editor"])
    );
    Ok(())
}

#[tokio::test]
async fn readme_signed_tokens_and_an_api() -> Result {
    // README begin: issuer
    use claimrules::{HotRules, Issuer, RuleSetOptions, SigningAlg, SigningKey};

    // Hot reload: the rules folder is watched for as long as the issuer (or any clone) lives.
    let rules = HotRules::load("rules", RuleSetOptions::default())?.watch()?;
    // Clone + Send + Sync: one issuer, cloned into each task.
    let issuer = Issuer::builder("https://login.example.com/")
        .rules(rules)
        .key(SigningKey::generate(SigningAlg::ES256)?) // or SigningKey::from_pkcs8(alg, &der)?
        .build()?;
    // README end

    // README begin: issue
    use claimrules::{Endpoint, Protocol, TokenRequest, User};
    use serde_json::json;

    // In a token handler, once your server has checked the client, the user and the scopes:
    let user = User::new("local|eddie")
        .email("eddie@example.com")
        .email_verified(true)
        .app_metadata(json!({"roles": ["editor"]}));
    let request = TokenRequest::new("my-app", user) // owned: moves into spawn_blocking
        .client_name("My App")
        .audience("https://api.example.com")
        .scopes(["openid", "read:contacts", "write:contacts"]) // requested (and allowed) scopes
        .protocol(Protocol::Password); // context.protocol "oauth2-password"
                                       // Rules are CPU-bound and bounded by their time budget: keep them off the async workers.
    let task_issuer = issuer.clone();
    let result = tokio::task::spawn_blocking(move || task_issuer.issue(&request)).await?;
    let (status, body) = match result {
        Ok(issued) => (
            200,
            json!({
                "access_token": issued.access_token,
                "id_token": issued.id_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope.join(" "),
            }),
        ),
        // invalid_grant with the rule's message for a denial, else server_error (log `e`)
        Err(e) => {
            let answer = e.oauth_error(Endpoint::Token);
            (answer.status, answer.to_json())
        }
    };
    // README end
    assert_eq!(status, 200, "{body}");
    // 20-scope-by-role read the requested scope from context.request.body.scope.
    assert_eq!(body["scope"], "openid read:contacts");
    let bearer_token = body["access_token"].as_str().expect("an access token");

    // README begin: verify
    use claimrules::{verify, Jwks, VerifyOptions};

    // An API parses the issuer's JWKS once (again after a key roll-over), then checks tokens.
    let jwks = Jwks::from_value(&issuer.jwks())?; // the document /.well-known/jwks.json serves
    let options = VerifyOptions::new("https://login.example.com/", "https://api.example.com")
        .require_scope("read:contacts");
    // A missing scope is VerifyError::MissingScope (is_insufficient_scope: answer 403).
    let claims = verify(bearer_token, &jwks, &options)?;
    // README end
    assert_eq!(claims["sub"], "local|eddie");
    assert_eq!(claims["client_id"], "my-app");
    assert_eq!(claims["scope"], "openid read:contacts");
    assert_eq!(
        claims["aud"],
        json!([
            "https://api.example.com",
            "https://login.example.com/userinfo"
        ])
    );
    assert_eq!(claims["https://example.com/roles"], json!(["editor"]));
    let write = VerifyOptions::new("https://login.example.com/", "https://api.example.com")
        .require_scope("write:contacts");
    assert!(verify(bearer_token, &jwks, &write).is_err_and(|e| e.is_insufficient_scope()));
    Ok(())
}

/// A denial is `invalid_grant` with the rule's message at the token endpoint (sample rule
/// 30-require-verified-email at the client `demo-app`).
#[test]
fn a_denial_is_an_oauth_error() -> Result {
    use claimrules::{Endpoint, Issuer, RuleSet, SigningAlg, SigningKey, TokenRequest, User};
    let issuer = Issuer::builder("https://login.example.com/")
        .rules(RuleSet::load("rules")?)
        .key(SigningKey::generate(SigningAlg::EdDSA)?)
        .build()?;
    let eve = User::new("local|eve").email("eve@example.com");
    let err = issuer
        .issue(&TokenRequest::new("demo-app", eve).scopes(["openid"]))
        .expect_err("unverified email at demo-app");
    let message = "Please verify your email before logging in.";
    assert_eq!(err.denial_message(), Some(message));
    let answer = err.oauth_error(Endpoint::Token);
    assert_eq!(
        (answer.status, answer.error.as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(
        answer.to_json(),
        json!({"error": "invalid_grant", "error_description": message})
    );
    assert_eq!(err.oauth_error(Endpoint::Authorize).error, "access_denied");
    Ok(())
}

/// The `rust` blocks of the README's "Rust" embedding section, each with the file and region
/// it is compiled from.
fn readme_blocks() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let start = readme
        .find("\n### Rust\n")
        .expect("README: ### Rust under Use it from your token server");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n### ").map_or(section.len(), |n| n + 1)];
    let mut blocks = Vec::new();
    let mut marker: Option<(String, String)> = None;
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(m) = line
            .strip_prefix("<!-- compiled: ")
            .and_then(|m| m.strip_suffix(" -->"))
        {
            let (file, name) = m.split_once('#').expect("FILE#NAME");
            marker = Some((file.to_owned(), name.to_owned()));
        } else if line.starts_with("```rust") {
            let (file, name) = marker
                .take()
                .unwrap_or_else(|| panic!("README: a rust block without <!-- compiled: -->"));
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push((file, name, body.join("\n")));
        }
    }
    blocks
}

/// The region `name` of `file`, without its common indentation.
fn region(file: &str, name: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let begin = format!("// README begin: {name}");
    let mut lines = text.lines().skip_while(|l| l.trim() != begin);
    let indent = lines
        .next()
        .unwrap_or_else(|| panic!("{file}: no `{begin}`"))
        .find('/')
        .unwrap_or(0);
    lines
        .take_while(|l| l.trim() != "// README end")
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn readme_blocks_are_the_compiled_ones() {
    let blocks = readme_blocks();
    assert!(blocks.len() >= 4, "found {} blocks", blocks.len());
    for (file, name, body) in blocks {
        assert_eq!(
            body,
            region(&file, &name),
            "README block {name} differs from {file}'s region (copy it over)"
        );
    }
}

//! claimrules: Auth0-style rules for token servers.
//!
//! Sandboxed Rhai scripts ("rules") run in order with Auth0-shaped `user` and `context` objects,
//! add namespaced custom claims to the access and ID tokens and may rewrite the access token's
//! scope. Around that engine the crate provides an issuer pipeline that enforces the namespace rule
//! and signs tokens, an OAuth 2.0 Authorization Code token server, hot reload, and a rule unit-test
//! runner.
//!
//! # Embedding
//!
//! The root of the crate is the surface a token server written in Rust needs:
//! [`RuleSet`] (compile and run rules), [`HotRules`] (a rule set that reloads when its folder
//! changes), [`User`] and [`Context`] (the objects rules see), [`Outcome`] (claims and scope),
//! [`Issuer`] (rules + namespace rule + signing) with [`TokenRequest`], [`SigningKey`] and
//! [`Protocol`], [`RuleError::oauth_error`] (the OAuth answer to a failure) and [`verify`] with
//! [`Jwks`] (for the APIs). With `default-features = false` that is the whole crate: no server
//! stack, store or command line is compiled.
//!
//! ```
//! use claimrules::{verify, Context, Issuer, Jwks, RuleSet, SigningAlg, SigningKey};
//! use claimrules::{TokenRequest, User, VerifyOptions};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Rules are compiled once and shared by every request (`RuleSet::load("rules")` reads a
//! // folder; `HotRules::load` also reloads it on change).
//! let rules = RuleSet::from_sources(
//!     vec![("roles".into(), r#"
//!         let roles = user.app_metadata.roles;
//!         if roles != () {
//!             context.accessToken["https://example.com/roles"] = roles;
//!         }
//!         if context.clientID == "reports" {
//!             context.accessToken.scope = ["read:contacts"];
//!         }
//!     "#.into())],
//!     json!({}),
//!     Default::default(),
//! )?;
//! let ada = User::new("auth0|42")
//!     .email("ada@example.com")
//!     .email_verified(true)
//!     .app_metadata(json!({"roles": ["admin"]}));
//!
//! // Claims only: your server builds the context and signs the tokens itself.
//! let context = Context::login("reports").audience("https://api.example.com");
//! let outcome = rules.run(ada.clone().into(), context.into())?;
//! assert_eq!(outcome.access_token["https://example.com/roles"], json!(["admin"]));
//! assert_eq!(outcome.scope, Some(vec!["read:contacts".to_string()]));
//!
//! // Claims and signed tokens: the issuer adds the standard claims and signs.
//! let issuer = Issuer::builder("https://login.example.com/")
//!     .rules(rules)
//!     .key(SigningKey::generate(SigningAlg::ES256)?)
//!     .build()?;
//! let request = TokenRequest::new("reports", ada)
//!     .audience("https://api.example.com")
//!     .scopes(["read:contacts", "write:contacts"]);
//! let issued = issuer.issue(&request)?;
//! assert_eq!(issued.scope, ["read:contacts"]); // the rule narrowed the scope
//!
//! // An API checks the token against the issuer's JWKS, parsed once.
//! let jwks = Jwks::from_value(&issuer.jwks())?;
//! let options = VerifyOptions::new("https://login.example.com/", "https://api.example.com")
//!     .require_scope("read:contacts");
//! let claims = verify(&issued.access_token, &jwks, &options)?;
//! assert_eq!(claims["sub"], "auth0|42");
//! assert_eq!(claims["https://example.com/roles"], json!(["admin"]));
//! # Ok(()) }
//! ```
//!
//! The full OAuth 2.0 server (feature `server`, on by default: `server::router`, `server::app`)
//! is an axum `Router` that a host app can `nest` under a prefix; its issuer URL must then end with that prefix
//! (`https://example.com/auth/` for `.nest("/auth", ..)`), since discovery and the login forms
//! are built from it.

pub mod claims;
#[cfg(feature = "server")]
pub mod config;
// Random tokens, hashes, PKCE: helpers of the issuer and the server, not an API.
#[doc(hidden)]
pub mod crypto;
#[cfg(feature = "server")]
pub mod datadir;
pub mod issuer;
pub mod model;
pub mod oauth;
// Argon2id hashes of the server's user directory (`claimrules hash-password`), not an API.
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod password;
#[cfg(feature = "server")]
pub mod playground;
pub mod rules;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
pub mod testing;

pub use issuer::verify::{verify, Jwks, VerifyError, VerifyOptions};
pub use issuer::{
    Endpoint, IssueError, Issued, Issuer, OAuthError, SetupError, SigningAlg, SigningKey,
    TokenRequest,
};
pub use model::{Context, Protocol, User};
pub use oauth::{ErrorCode, GrantType};
pub use rules::{HotRules, Outcome, RuleError, RuleSet, RuleSetOptions};
pub use testing::TestSuite;

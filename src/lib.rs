//! claimrules: Auth0-style rules for token servers.
//!
//! Sandboxed Rhai scripts ("rules") run in order with Auth0-shaped `user` and `context` objects,
//! add namespaced custom claims to the access and ID tokens and may rewrite the access token's
//! scope. Around that engine the crate provides an issuer pipeline that enforces the namespace rule
//! and signs tokens, an OAuth 2.0 Authorization Code token server, hot reload, and a rule unit-test
//! runner.

pub mod claims;
pub mod config;
pub mod crypto;
pub mod hooks;
pub mod issuer;
pub mod password;
pub mod rules;
pub mod serve;
pub mod server;
pub mod store;
pub mod testing;
pub mod watch;

pub use issuer::verify::verify;
pub use issuer::Issuer;
pub use rules::{Outcome, RuleError, RuleSet};
pub use testing::TestSuite;
pub use watch::HotRules;

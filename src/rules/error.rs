//! Why a rule set did not load ([`LoadError`]) and why a pipeline run failed ([`RuleError`]).

use std::path::PathBuf;

use crate::claims::{Refusal, TokenKind};

/// Why a rule set did not load.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The rules path is not a folder.
    #[error("{}: not a folder", .0.display())]
    NotAFolder(PathBuf),
    /// A file could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// `rules.toml` is invalid.
    #[error("{}: {message}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A rule failed to compile.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Compile {
        /// The rule's name.
        rule: String,
        /// The rule's file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
}

/// Why a pipeline run failed. No token may be issued after any of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The rule denied the login on purpose (`deny("msg")` or `throw "msg"`).
    #[error("rule {rule:?} denied access: {message}")]
    Denied {
        /// The denying rule.
        rule: String,
        /// Its message (safe to show to the app).
        message: String,
    },
    /// A script error: type error, unknown function, sandbox limit, bad helper input.
    #[error("rule {rule:?} failed at line {line}, column {column}: {message}")]
    Script {
        /// The failing rule.
        rule: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What went wrong.
        message: String,
    },
    /// The pipeline's wall-clock budget ran out.
    #[error("rule {rule:?} exceeded the pipeline's time budget of {budget_ms} ms (line {line}, column {column})")]
    Timeout {
        /// The rule running when time ran out.
        rule: String,
        /// The budget.
        budget_ms: u64,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// `context.accessToken.scope` is not a valid scope.
    #[error("rule {rule:?} set an invalid context.accessToken.scope: {message}")]
    InvalidScope {
        /// The rule.
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// Under the `reject` policy, a claim broke the namespace rule.
    #[error("rule {rule:?} set {key:?} on the {token}: {reason}")]
    Namespace {
        /// The rule that set the claim.
        rule: String,
        /// The claim key.
        key: String,
        /// The token.
        token: TokenKind,
        /// Why it is refused.
        reason: Refusal,
    },
    /// One token's custom claims exceed the size cap.
    #[error("the {token}'s custom claims are {size} bytes of JSON, over the limit of {limit}")]
    ClaimsTooLarge {
        /// The token.
        token: TokenKind,
        /// Their size.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The user or context input is not usable (not a JSON object, or not convertible).
    #[error("invalid input: {0}")]
    Input(String),
}

impl RuleError {
    /// The rule the error belongs to, when there is one.
    pub fn rule(&self) -> Option<&str> {
        match self {
            RuleError::Denied { rule, .. }
            | RuleError::Script { rule, .. }
            | RuleError::Timeout { rule, .. }
            | RuleError::InvalidScope { rule, .. }
            | RuleError::Namespace { rule, .. } => Some(rule),
            RuleError::ClaimsTooLarge { .. } | RuleError::Input(_) => None,
        }
    }

    /// True for an on-purpose denial (the app gets `access_denied` with the message).
    pub fn is_denial(&self) -> bool {
        matches!(self, RuleError::Denied { .. })
    }
}

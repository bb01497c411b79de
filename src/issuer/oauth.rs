//! The OAuth 2.0 answer to a failed issuance: one mapping from [`RuleError`] and
//! [`IssueError`] to an HTTP status, an `error` code and a description that is safe to show,
//! used by the token server and offered to embedders.
//!
//! | failure | [`Endpoint::Authorize`] (RFC 6749 §4.1.2.1, sent in the redirect) | [`Endpoint::Token`] (RFC 6749 §5.2) |
//! | --- | --- | --- |
//! | a denial (`deny("msg")`, `throw "msg"`) | `access_denied`, 403, the rule's message | `invalid_grant`, 400, the rule's message |
//! | any other rule error, the time budget included | `server_error`, 500, a generic text | `server_error`, 500, a generic text |
//! | signing failed ([`IssueError::Key`]) | `server_error`, 500, a generic text | `server_error`, 500, a generic text |
//!
//! At the token endpoint a denial is `invalid_grant`: RFC 6749 §5.2 defines no `access_denied`
//! there, and `invalid_grant` is its code for a grant that cannot be used. A rule that runs past
//! its time budget is a fault of the rules (a retry would run out of time again), so it is a
//! `server_error`, not `temporarily_unavailable`. Errors other than denials name the rule, line
//! and column: log them ([`std::fmt::Display`]), never send them.
//!
//! ```
//! use claimrules::{Endpoint, RuleError};
//!
//! let denied = RuleError::Denied { rule: "gate".into(), message: "verify your email".into() };
//! assert_eq!(denied.denial_message(), Some("verify your email"));
//! let answer = denied.oauth_error(Endpoint::Token);
//! assert_eq!((answer.status, answer.error.as_str()), (400, "invalid_grant"));
//! assert_eq!(answer.to_json()["error_description"], "verify your email");
//! assert_eq!(denied.oauth_error(Endpoint::Authorize).error, "access_denied");
//! ```

use serde_json::{json, Value};

use super::IssueError;
use crate::oauth::ErrorCode;
use crate::rules::RuleError;

/// Where the failed request came in, which decides the `error` code of a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// The authorization endpoint (an interactive login): the error is sent to the client's
    /// redirect URI (RFC 6749 §4.1.2.1).
    Authorize,
    /// The token endpoint (a grant): the error is a JSON body (RFC 6749 §5.2).
    Token,
}

/// An OAuth 2.0 error answer: what to send instead of tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
#[non_exhaustive]
pub struct OAuthError {
    /// The HTTP status of a JSON answer (at the authorization endpoint the error travels in the
    /// redirect; this is the status to use where no redirect is possible).
    pub status: u16,
    /// `error`.
    pub error: ErrorCode,
    /// `error_description`: the rule's message for a denial, else a generic text.
    pub description: String,
}

impl OAuthError {
    /// The RFC 6749 §5.2 JSON body: `{"error": …, "error_description": …}`.
    pub fn to_json(&self) -> Value {
        json!({"error": self.error.as_str(), "error_description": self.description})
    }

    fn server_error(endpoint: Endpoint) -> OAuthError {
        OAuthError {
            status: 500,
            error: ErrorCode::ServerError,
            description: match endpoint {
                Endpoint::Authorize => "the login could not be completed",
                Endpoint::Token => "the server could not complete the request",
            }
            .to_owned(),
        }
    }
}

impl RuleError {
    /// The message of an on-purpose denial (`deny("msg")`, `throw "msg"`), safe to show to the
    /// app; `None` for any other error.
    pub fn denial_message(&self) -> Option<&str> {
        match self {
            RuleError::Denied { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The answer to send for this error at `endpoint` (see the [module](self) table).
    pub fn oauth_error(&self, endpoint: Endpoint) -> OAuthError {
        match (self.denial_message(), endpoint) {
            (Some(message), Endpoint::Authorize) => OAuthError {
                status: 403,
                error: ErrorCode::AccessDenied,
                description: message.to_owned(),
            },
            (Some(message), Endpoint::Token) => OAuthError {
                status: 400,
                error: ErrorCode::InvalidGrant,
                description: message.to_owned(),
            },
            (None, _) => OAuthError::server_error(endpoint),
        }
    }
}

impl IssueError {
    /// The message of an on-purpose denial by a rule; `None` for any other error.
    pub fn denial_message(&self) -> Option<&str> {
        match self {
            IssueError::Rules(e) => e.denial_message(),
            IssueError::Key(_) => None,
        }
    }

    /// The answer to send for this error at `endpoint` (see the [module](self) table).
    pub fn oauth_error(&self, endpoint: Endpoint) -> OAuthError {
        match self {
            IssueError::Rules(e) => e.oauth_error(endpoint),
            IssueError::Key(_) => OAuthError::server_error(endpoint),
        }
    }
}

impl From<OAuthError> for crate::oauth::TokenError {
    /// The token endpoint's answer to a failed issuance.
    fn from(e: OAuthError) -> crate::oauth::TokenError {
        crate::oauth::TokenError::new(e.error, e.description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_denial_shows_its_message() {
        let timeout = RuleError::Timeout {
            rule: "slow".into(),
            budget_ms: 200,
            line: 3,
            column: 1,
        };
        assert_eq!(timeout.denial_message(), None);
        for endpoint in [Endpoint::Authorize, Endpoint::Token] {
            let answer = timeout.oauth_error(endpoint);
            assert_eq!(
                (answer.status, answer.error.as_str()),
                (500, "server_error")
            );
            assert!(!answer.description.contains("slow"), "{answer}");
        }
        let signing = IssueError::Key(super::super::KeyError::NoActiveKey);
        assert_eq!(signing.oauth_error(Endpoint::Token).error, "server_error");
    }
}

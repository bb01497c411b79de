//! [`ErrorCode`]: the `error` values of OAuth 2.0 error answers.

use std::fmt;
use std::str::FromStr;

/// An OAuth 2.0 `error` code: those of RFC 6749 §4.1.2.1 (authorization endpoint) and §5.2
/// (token endpoint), the OpenID Connect Core 1.0 §3.1.2.6 codes of `prompt=none`, and the
/// RFC 6750 §3.1 codes of a protected resource (the userinfo endpoint).
///
/// It displays, parses and (de)serializes as the code itself, and compares equal to a `&str`
/// holding it. [`ErrorCode::status`] is the HTTP status of a JSON answer carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_request`: a parameter is missing, repeated, unsupported or malformed.
    InvalidRequest,
    /// `invalid_client`: client authentication failed (RFC 6749 §5.2).
    InvalidClient,
    /// `invalid_grant`: the grant (code, refresh token, credentials) is invalid, expired or
    /// revoked, or a rule denied it at the token endpoint.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant or response type.
    UnauthorizedClient,
    /// `unsupported_grant_type`: the server does not support the grant type (RFC 6749 §5.2).
    UnsupportedGrantType,
    /// `invalid_scope`: the requested scope is invalid, unknown or malformed.
    InvalidScope,
    /// `access_denied`: the user or a rule denied the request (RFC 6749 §4.1.2.1).
    AccessDenied,
    /// `unsupported_response_type`: the server does not support the response type
    /// (RFC 6749 §4.1.2.1).
    UnsupportedResponseType,
    /// `server_error`: the server failed (RFC 6749 §4.1.2.1; also sent by the token endpoint).
    ServerError,
    /// `temporarily_unavailable`: the server cannot handle the request now (RFC 6749
    /// §4.1.2.1; also sent by the token endpoint).
    TemporarilyUnavailable,
    /// `login_required`: `prompt=none` and no logged-in user (OpenID Connect Core §3.1.2.6).
    LoginRequired,
    /// `consent_required`: `prompt=none` and no consent (OpenID Connect Core §3.1.2.6).
    ConsentRequired,
    /// `interaction_required`: `prompt=none` and the login needs the user (OpenID Connect Core
    /// §3.1.2.6).
    InteractionRequired,
    /// `invalid_token`: the access token is missing, expired or invalid (RFC 6750 §3.1).
    InvalidToken,
    /// `insufficient_scope`: the access token lacks a required scope (RFC 6750 §3.1).
    InsufficientScope,
}

/// Every code, in declaration order (parsing searches it).
const ALL: [ErrorCode; 15] = [
    ErrorCode::InvalidRequest,
    ErrorCode::InvalidClient,
    ErrorCode::InvalidGrant,
    ErrorCode::UnauthorizedClient,
    ErrorCode::UnsupportedGrantType,
    ErrorCode::InvalidScope,
    ErrorCode::AccessDenied,
    ErrorCode::UnsupportedResponseType,
    ErrorCode::ServerError,
    ErrorCode::TemporarilyUnavailable,
    ErrorCode::LoginRequired,
    ErrorCode::ConsentRequired,
    ErrorCode::InteractionRequired,
    ErrorCode::InvalidToken,
    ErrorCode::InsufficientScope,
];

impl ErrorCode {
    /// The code as sent in `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
        }
    }

    /// The HTTP status of a JSON answer with this code: 401 for `invalid_client` (RFC 6749
    /// §5.2) and `invalid_token`, 403 for `access_denied` and `insufficient_scope` (RFC 6750
    /// §3.1), 500 for `server_error`, 503 for `temporarily_unavailable`, 400 for the others.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => 401,
            ErrorCode::AccessDenied | ErrorCode::InsufficientScope => 403,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// A string that is not an [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown OAuth error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;
    fn from_str(name: &str) -> Result<ErrorCode, UnknownErrorCode> {
        ALL.into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| UnknownErrorCode(name.to_owned()))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<ErrorCode> for &str {
    fn eq(&self, other: &ErrorCode) -> bool {
        *self == other.as_str()
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for code in ALL {
            let name = code.as_str();
            assert_eq!(code.to_string(), name);
            assert_eq!(name.parse::<ErrorCode>(), Ok(code));
            assert_eq!(code, name);
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::json!(name));
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), code);
        }
        let names: std::collections::HashSet<_> = ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(
            "nope".parse::<ErrorCode>(),
            Err(UnknownErrorCode("nope".into()))
        );
        assert!(serde_json::from_value::<ErrorCode>(serde_json::json!("nope")).is_err());
    }

    #[test]
    fn statuses_follow_rfc_6749_and_6750() {
        assert_eq!(ErrorCode::InvalidClient.status(), 401);
        assert_eq!(ErrorCode::ServerError.status(), 500);
        assert_eq!(ErrorCode::TemporarilyUnavailable.status(), 503);
        assert_eq!(ErrorCode::InsufficientScope.status(), 403);
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidGrant,
            ErrorCode::UnauthorizedClient,
            ErrorCode::UnsupportedGrantType,
            ErrorCode::InvalidScope,
        ] {
            assert_eq!(code.status(), 400, "{code}");
        }
    }
}

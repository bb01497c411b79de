//! The OAuth 2.0 wire vocabulary: the `error` codes of error answers ([`ErrorCode`]), the
//! `grant_type` values of token requests ([`GrantType`]), and the requests and answers of the
//! token endpoint ([`token`]) and the authorization endpoint ([`authorize`]). Plain serde
//! types with no server stack, shared by the issuer, the token server and the token hooks.
//!
//! ```
//! use claimrules::oauth::{ErrorCode, GrantType, TokenParams};
//! use claimrules::Protocol;
//!
//! let code: ErrorCode = "invalid_client".parse().unwrap();
//! assert_eq!((code, code.status()), (ErrorCode::InvalidClient, 401));
//! assert_eq!(ErrorCode::InvalidGrant, "invalid_grant");
//!
//! let grant: GrantType = "refresh_token".parse().unwrap();
//! assert_eq!(grant, GrantType::RefreshToken);
//! assert_eq!(grant.protocol(), Protocol::RefreshToken);
//!
//! let params = TokenParams::parse(None, b"grant_type=refresh_token&grant_type=x");
//! assert_eq!(params.unwrap_err().code, ErrorCode::InvalidRequest);
//! ```

pub mod authorize;
mod error_code;
mod grant_type;
pub mod token;

pub use authorize::{AuthorizeError, CodeResponse};
pub use error_code::{ErrorCode, UnknownErrorCode};
pub use grant_type::GrantType;
pub use token::{basic_credentials, TokenError, TokenParams, TokenResponse};

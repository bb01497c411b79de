//! The OAuth 2.0 wire vocabulary: the `error` codes of error answers ([`ErrorCode`]) and the
//! `grant_type` values of token requests ([`GrantType`]). Plain serde types with no server
//! stack, shared by the issuer, the token server and the token hooks.
//!
//! ```
//! use claimrules::oauth::{ErrorCode, GrantType};
//! use claimrules::Protocol;
//!
//! let code: ErrorCode = "invalid_client".parse().unwrap();
//! assert_eq!((code, code.status()), (ErrorCode::InvalidClient, 401));
//! assert_eq!(ErrorCode::InvalidGrant, "invalid_grant");
//!
//! let grant: GrantType = "refresh_token".parse().unwrap();
//! assert_eq!(grant, GrantType::RefreshToken);
//! assert_eq!(grant.protocol(), Protocol::RefreshToken);
//! ```

mod error_code;
mod grant_type;

pub use error_code::{ErrorCode, UnknownErrorCode};
pub use grant_type::GrantType;

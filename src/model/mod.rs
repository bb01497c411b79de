//! Typed builders for the Auth0-shaped `user` and `context` objects rules run with.
//!
//! Both are open JSON objects underneath (README "Variables in scope"): the typed setters cover the documented
//! fields, [`User::set`] / [`Context::set`] add anything else (`user.groups`,
//! `context.request.geoip`, …), and every field passes through to the rules unchanged. Convert
//! with `.into()` wherever a `serde_json::Value` is expected ([`crate::RuleSet::run`],
//! [`crate::TokenRequest::new`]).
//!
//! ```
//! use claimrules::{Context, User};
//! use serde_json::json;
//!
//! let user = User::new("auth0|42")
//!     .email("ada@example.com")
//!     .email_verified(true)
//!     .app_metadata(json!({"roles": ["admin"]}))
//!     .set("groups", json!(["eng"]));
//! let context = Context::login("my-app")
//!     .audience("https://api.example.com")
//!     .query(json!({"scope": "openid read:contacts"}))
//!     .ip("203.0.113.7");
//!
//! let user = serde_json::Value::from(user);
//! assert_eq!(user["app_metadata"]["roles"], json!(["admin"]));
//! assert_eq!(user["groups"], json!(["eng"]));
//! let context = serde_json::Value::from(context);
//! assert_eq!(context["clientID"], "my-app");
//! assert_eq!(context["protocol"], "oidc-basic-profile");
//! assert_eq!(context["request"]["ip"], "203.0.113.7");
//! assert_eq!(context["accessToken"], json!({}));
//! ```

use serde_json::{json, Value};

/// The conversions shared by [`User`] and [`Context`]: from a JSON object that has the string
/// field `$field` (or a `Value` holding one), and back to a map or a value.
macro_rules! json_object_conversions {
    ($ty:ident, $object:literal, $field:literal) => {
        impl TryFrom<Map<String, Value>> for $ty {
            type Error = ModelError;
            fn try_from(fields: Map<String, Value>) -> Result<$ty, ModelError> {
                if !fields.get($field).is_some_and(Value::is_string) {
                    return Err(ModelError::MissingField {
                        object: $object,
                        field: $field,
                    });
                }
                Ok($ty { fields })
            }
        }

        impl TryFrom<Value> for $ty {
            type Error = ModelError;
            fn try_from(value: Value) -> Result<$ty, ModelError> {
                match value {
                    Value::Object(m) => $ty::try_from(m),
                    _ => Err(ModelError::NotAnObject($object)),
                }
            }
        }

        impl From<$ty> for Map<String, Value> {
            fn from(v: $ty) -> Map<String, Value> {
                v.fields
            }
        }

        impl From<$ty> for Value {
            fn from(v: $ty) -> Value {
                v.into_value()
            }
        }
    };
}

mod context;
mod protocol;
pub mod time;
mod user;

pub use context::{Context, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_NAME};
pub use protocol::Protocol;
pub use time::unix_now;
pub use user::User;

/// Why a JSON value is not a usable user or context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The value is not a JSON object.
    #[error("the {0} must be a JSON object")]
    NotAnObject(&'static str),
    /// A required string field is missing or not a string.
    #[error("the {object} needs a string {field:?}")]
    MissingField {
        /// `user` or `context`.
        object: &'static str,
        /// The field.
        field: &'static str,
    },
}

/// `null` metadata becomes `{}`: rules read `user.app_metadata.x` and must not fail on it.
fn object_or_empty(v: Value) -> Value {
    if v.is_null() {
        json!({})
    } else {
        v
    }
}

//! [`GrantType`]: the `grant_type` of a token request, and the `context.protocol` rules see
//! for it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::model::Protocol;

/// A token request's `grant_type` (RFC 6749 §4, RFC 8628 §3.4, RFC 7523 §2.1, RFC 8693 §2.1),
/// or `implicit` as token hooks report front-channel tokens. Any other value is
/// [`GrantType::Other`]. It displays, parses (infallibly) and (de)serializes as the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrantType {
    /// `authorization_code` (RFC 6749 §4.1.3).
    AuthorizationCode,
    /// `refresh_token` (RFC 6749 §6).
    RefreshToken,
    /// `client_credentials` (RFC 6749 §4.4).
    ClientCredentials,
    /// `password`: the resource owner password credentials grant (RFC 6749 §4.3).
    Password,
    /// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4).
    DeviceCode,
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1).
    JwtBearer,
    /// `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693 §2.1).
    TokenExchange,
    /// `implicit`: tokens of the implicit flow (RFC 6749 §4.2), as Okta's token hooks name them.
    Implicit,
    /// Any other value, kept as it is (an empty one included).
    Other(String),
}

/// The named variants with their values, in declaration order.
const NAMED: [(GrantType, &str); 8] = [
    (GrantType::AuthorizationCode, "authorization_code"),
    (GrantType::RefreshToken, "refresh_token"),
    (GrantType::ClientCredentials, "client_credentials"),
    (GrantType::Password, "password"),
    (
        GrantType::DeviceCode,
        "urn:ietf:params:oauth:grant-type:device_code",
    ),
    (
        GrantType::JwtBearer,
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ),
    (
        GrantType::TokenExchange,
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ),
    (GrantType::Implicit, "implicit"),
];

impl GrantType {
    /// The `grant_type` value.
    pub fn as_str(&self) -> &str {
        match self {
            GrantType::Other(value) => value,
            known => NAMED
                .iter()
                .find(|(g, _)| g == known)
                .map_or("", |(_, value)| value),
        }
    }

    /// The `context.protocol` of this grant: the one grant-to-protocol table of the crate.
    ///
    /// `implicit` and an empty grant type (a front-channel login) are
    /// [`Protocol::AuthorizationCode`] (`oidc-basic-profile`), as the token hooks have always
    /// reported them; `client_credentials` is [`Protocol::ClientCredentials`]; an unknown grant
    /// type is [`Protocol::Other`] with the grant type as its name.
    pub fn protocol(&self) -> Protocol {
        match self {
            GrantType::AuthorizationCode | GrantType::Implicit => Protocol::AuthorizationCode,
            GrantType::RefreshToken => Protocol::RefreshToken,
            GrantType::ClientCredentials => Protocol::ClientCredentials,
            GrantType::Password => Protocol::Password,
            GrantType::DeviceCode => Protocol::DeviceCode,
            GrantType::JwtBearer => Protocol::ResourceOwnerJwtBearer,
            GrantType::TokenExchange => Protocol::TokenExchange,
            GrantType::Other(value) if value.is_empty() => Protocol::AuthorizationCode,
            GrantType::Other(value) => Protocol::Other(value.clone()),
        }
    }
}

impl Protocol {
    /// The protocol of an OAuth 2.0 `grant_type` value: [`GrantType::protocol`] of the parsed
    /// value.
    pub fn for_grant_type(grant_type: &str) -> Protocol {
        GrantType::from(grant_type).protocol()
    }
}

impl From<&str> for GrantType {
    /// The variant of `value`, or [`GrantType::Other`].
    fn from(value: &str) -> GrantType {
        NAMED
            .iter()
            .find(|(_, v)| *v == value)
            .map_or_else(|| GrantType::Other(value.to_owned()), |(g, _)| g.clone())
    }
}

impl From<String> for GrantType {
    /// The variant of `value`, or [`GrantType::Other`].
    fn from(value: String) -> GrantType {
        GrantType::from(value.as_str())
    }
}

impl FromStr for GrantType {
    type Err = std::convert::Infallible;
    fn from_str(value: &str) -> Result<GrantType, Self::Err> {
        Ok(GrantType::from(value))
    }
}

impl fmt::Display for GrantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for GrantType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for GrantType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<GrantType, D::Error> {
        let value = Cow::<'de, str>::deserialize(d)?;
        Ok(GrantType::from(value.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips() {
        for (g, value) in NAMED.iter() {
            assert_eq!(g.as_str(), *value);
            assert_eq!(g.to_string(), *value);
            assert_eq!(&value.parse::<GrantType>().unwrap(), g);
            let json = serde_json::to_value(g).unwrap();
            assert_eq!(json, serde_json::json!(value));
            assert_eq!(&serde_json::from_value::<GrantType>(json).unwrap(), g);
        }
        assert_eq!(
            GrantType::from("urn:example:custom"),
            GrantType::Other("urn:example:custom".into())
        );
        assert_eq!(
            GrantType::from("urn:example:custom").as_str(),
            "urn:example:custom"
        );
    }

    #[test]
    fn grant_types_map_as_the_hooks_documented() {
        for (grant, name) in [
            ("authorization_code", "oidc-basic-profile"),
            ("", "oidc-basic-profile"),
            ("implicit", "oidc-basic-profile"),
            ("refresh_token", "oauth2-refresh-token"),
            ("client_credentials", "oauth2-client-credentials"),
            ("password", "oauth2-password"),
            (
                "urn:ietf:params:oauth:grant-type:device_code",
                "oauth2-device-code",
            ),
            (
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "oauth2-resource-owner-jwt-bearer",
            ),
            (
                "urn:ietf:params:oauth:grant-type:token-exchange",
                "oauth2-token-exchange",
            ),
            ("urn:example:custom", "urn:example:custom"),
        ] {
            assert_eq!(GrantType::from(grant).protocol().as_str(), name, "{grant}");
            assert_eq!(Protocol::for_grant_type(grant).as_str(), name, "{grant}");
        }
    }
}

//! `context.protocol`: which flow is issuing, with every value Auth0 documents for rules
//! (<https://auth0.com/docs/customize/rules/context-object>) and room for any other.
//!
//! ```
//! use claimrules::Protocol;
//!
//! assert_eq!(Protocol::Password.as_str(), "oauth2-password");
//! assert_eq!(Protocol::from("samlp"), Protocol::Samlp);
//! assert_eq!(Protocol::from("my-sso"), Protocol::Other("my-sso".into()));
//! assert_eq!("oauth2-refresh-token".parse::<Protocol>().unwrap(), Protocol::RefreshToken);
//! assert_eq!(Protocol::RefreshToken.to_string(), "oauth2-refresh-token");
//! assert!(Protocol::RefreshToken.uses_token_endpoint());
//! assert!(!Protocol::AuthorizationCode.uses_token_endpoint());
//! ```

use std::borrow::Cow;

/// Which flow is issuing, as the rules see it in `context.protocol`.
///
/// Build one from its name with `Protocol::from("...")` (a documented name gives its variant, any
/// other name [`Protocol::Other`]), or from an OAuth 2.0 grant type with
/// `GrantType::protocol` (in `claimrules::oauth`, the one grant-to-protocol table). It
/// (de)serializes as its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// `oidc-basic-profile`: an interactive login through the Authorization Code flow.
    #[default]
    AuthorizationCode,
    /// `oidc-implicit-profile`: an interactive login of a browser or mobile app through the
    /// implicit flow.
    Implicit,
    /// `oauth2-resource-owner`: a username and password login of a trusted app.
    ResourceOwner,
    /// `oauth2-resource-owner-jwt-bearer`: a login with a JWT bearer assertion (RFC 7523).
    ResourceOwnerJwtBearer,
    /// `oauth2-password`: the password grant (RFC 6749 §4.3).
    Password,
    /// `oauth2-access-token`: a login with an identity provider's access token (Auth0's
    /// `/oauth/access_token` endpoint).
    AccessToken,
    /// `oauth2-refresh-token`: the refresh token grant (RFC 6749 §6).
    RefreshToken,
    /// `oauth2-device-code`: the device authorization grant (RFC 8628).
    DeviceCode,
    /// `oauth2-token-exchange`: token exchange (RFC 8693), e.g. native social login.
    TokenExchange,
    /// `oauth2-client-credentials`: the client credentials grant (RFC 6749 §4.4). Auth0 runs no
    /// rules for it; this is the name the token hooks give it.
    ClientCredentials,
    /// `samlp`: a SAML login.
    Samlp,
    /// `wsfed`: a WS-Federation login.
    Wsfed,
    /// `wstrust-usernamemixed`: a WS-Trust username and password login.
    WsTrustUsernameMixed,
    /// `delegation`: a call of the delegation endpoint.
    Delegation,
    /// `redirect-callback`: a login resumed after a redirect rule.
    RedirectCallback,
    /// Any other name, passed to the rules as it is.
    Other(String),
}

/// The documented variants with their names, in declaration order.
const NAMED: [(Protocol, &str); 15] = [
    (Protocol::AuthorizationCode, "oidc-basic-profile"),
    (Protocol::Implicit, "oidc-implicit-profile"),
    (Protocol::ResourceOwner, "oauth2-resource-owner"),
    (
        Protocol::ResourceOwnerJwtBearer,
        "oauth2-resource-owner-jwt-bearer",
    ),
    (Protocol::Password, "oauth2-password"),
    (Protocol::AccessToken, "oauth2-access-token"),
    (Protocol::RefreshToken, "oauth2-refresh-token"),
    (Protocol::DeviceCode, "oauth2-device-code"),
    (Protocol::TokenExchange, "oauth2-token-exchange"),
    (Protocol::ClientCredentials, "oauth2-client-credentials"),
    (Protocol::Samlp, "samlp"),
    (Protocol::Wsfed, "wsfed"),
    (Protocol::WsTrustUsernameMixed, "wstrust-usernamemixed"),
    (Protocol::Delegation, "delegation"),
    (Protocol::RedirectCallback, "redirect-callback"),
];

impl Protocol {
    /// The `context.protocol` value.
    pub fn as_str(&self) -> &str {
        match self {
            Protocol::Other(name) => name,
            known => NAMED
                .iter()
                .find(|(p, _)| p == known)
                .map_or("", |(_, name)| name),
        }
    }

    /// Whether the flow's parameters arrive in the POST body of a token request (the grants of
    /// the token endpoint and the delegation endpoint) rather than in the query of a login (the
    /// front-channel flows, and [`Protocol::Other`]). It decides where
    /// [`TokenRequest`](crate::TokenRequest) puts the requested scope: `context.request.body`
    /// or `context.request.query`.
    pub fn uses_token_endpoint(&self) -> bool {
        matches!(
            self,
            Protocol::ResourceOwner
                | Protocol::ResourceOwnerJwtBearer
                | Protocol::Password
                | Protocol::AccessToken
                | Protocol::RefreshToken
                | Protocol::DeviceCode
                | Protocol::TokenExchange
                | Protocol::ClientCredentials
                | Protocol::WsTrustUsernameMixed
                | Protocol::Delegation
        )
    }
}

impl From<&str> for Protocol {
    /// The variant named `name`, or [`Protocol::Other`].
    fn from(name: &str) -> Protocol {
        NAMED
            .iter()
            .find(|(_, n)| *n == name)
            .map_or_else(|| Protocol::Other(name.to_owned()), |(p, _)| p.clone())
    }
}

impl From<String> for Protocol {
    /// The variant named `name`, or [`Protocol::Other`].
    fn from(name: String) -> Protocol {
        Protocol::from(name.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = std::convert::Infallible;
    fn from_str(name: &str) -> Result<Protocol, Self::Err> {
        Ok(Protocol::from(name))
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        let name = Cow::<'de, str>::deserialize(d)?;
        Ok(Protocol::from(name.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for (p, name) in NAMED.iter() {
            assert_eq!(p.as_str(), *name);
            assert_eq!(&Protocol::from(*name), p);
            assert_eq!(p.to_string(), *name);
            assert_eq!(&name.parse::<Protocol>().unwrap(), p);
            let json = serde_json::to_value(p).unwrap();
            assert_eq!(json, serde_json::json!(name));
            assert_eq!(&serde_json::from_value::<Protocol>(json).unwrap(), p);
        }
        assert_eq!(Protocol::from("x-custom").as_str(), "x-custom");
    }
}

//! Signing a run's outcome as the issuer would, to show the tokens the server would issue.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::PipelineError;
use crate::config::{ApiConfig, ClientConfig, SigningAlg};
use crate::issuer::{Issuer, RuleClaims, SigningKey, TokenRequest};
use crate::model::Protocol;
use crate::rules::{Outcome, RuleSet, RuleSetOptions};
use crate::testing::requested_scope;

/// The `iss` of the playground's tokens (`.invalid` is reserved by RFC 2606 §2).
pub const PLAYGROUND_ISSUER: &str = "https://playground.invalid/";

/// A JWT with its decoded parts.
#[derive(Debug, Serialize)]
pub struct Jwt {
    /// The compact JWS.
    pub jwt: String,
    /// Its header.
    pub header: Value,
    /// Its payload (standard and custom claims).
    pub payload: Value,
}

/// The signed tokens of a successful run.
#[derive(Debug, Serialize)]
pub struct SignedView {
    /// How they were made.
    pub note: String,
    /// The access token.
    pub access_token: Jwt,
    /// The ID token (when `openid` was requested).
    pub id_token: Option<Jwt>,
}

/// Signs outcomes as the issuer would, with a throwaway key made at start-up.
pub struct Signer {
    issuer: Issuer,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// An issuer for [`PLAYGROUND_ISSUER`] with a fresh ES256 key.
    pub fn new() -> Result<Signer, PipelineError> {
        let rules = RuleSet::from_sources(vec![], json!({}), RuleSetOptions::default())
            .map_err(|e| PipelineError::Issuer(e.to_string()))?;
        let issuer = Issuer::builder(PLAYGROUND_ISSUER)
            .rules(rules)
            .key(SigningKey::generate(SigningAlg::ES256)?)
            .build()
            .map_err(|e| PipelineError::Issuer(e.to_string()))?;
        Ok(Signer { issuer })
    }

    /// The tokens for `outcome`, built by [`Issuer::sign`] from the request the context
    /// describes: client `clientID`, API `audience`, granted scope = requested scope.
    pub(super) fn sign(
        &self,
        user: &Map<String, Value>,
        context: &Map<String, Value>,
        out: &Outcome,
    ) -> Option<SignedView> {
        let str_of = |k: &str| context.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut client =
            ClientConfig::new(str_of("clientID").unwrap_or_else(|| "test-client".into()));
        client.name = str_of("clientName");
        let api = str_of("audience").map(ApiConfig::new);
        let requested = requested_scope(context).unwrap_or_default();
        let mut req = TokenRequest::for_client(&client, Value::Object(user.clone()))
            .scopes(requested.clone());
        if let Some(api) = &api {
            req = req.api(api);
        }
        if str_of("protocol").as_deref() == Some(Protocol::RefreshToken.as_str()) {
            req.protocol = Protocol::RefreshToken;
        }
        req.request = Some(context.get("request").cloned().unwrap_or_else(|| json!({})));
        req.session_id = str_of("sessionID");
        if let Some(n) = context
            .get("stats")
            .and_then(|s| s.get("loginsCount"))
            .and_then(Value::as_i64)
        {
            req.logins_count = n;
        }
        let scope = out.scope.clone().unwrap_or_else(|| requested.clone());
        let claims = RuleClaims {
            user: out.user.clone(),
            access_token: out.access_token.clone(),
            id_token: out.id_token.clone(),
            scope_changed: scope != requested,
            scope,
            rules_version: 0,
            metadata: out.metadata.clone(),
        };
        let issued = self.issuer.sign(&req, &claims).ok()?;
        Some(SignedView {
            note: format!(
                "signed by the playground's issuer {PLAYGROUND_ISSUER} with a throwaway ES256 key \
                 made at start-up (the same code as the token server's); the granted scope is \
                 the requested one, and an ID token is issued when it holds `openid`"
            ),
            access_token: decode(issued.access_token),
            id_token: issued.id_token.map(decode),
        })
    }
}

/// Splits a JWS and decodes its header and payload (no verification: we just signed it).
fn decode(jwt: String) -> Jwt {
    let part = |i: usize| {
        jwt.split('.')
            .nth(i)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let (header, payload) = (part(0), part(1));
    Jwt {
        jwt,
        header,
        payload,
    }
}

//! `POST /oauth/token`: the authorization code and refresh token grants (RFC 6749 §4.1.3, §6).
//! Here: client authentication, dispatch by grant type, and what both grants share (signing,
//! the answer); the grants themselves are in `code.rs` and `refresh.rs`. The wire types
//! (parameters, answers, errors) are [`crate::oauth::token`].

mod code;
mod refresh;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::errors::no_store;
use super::{ClientIp, Shared};
use crate::config::ClientConfig;
use crate::crypto::secret_eq;
use crate::issuer::{Issued, RuleClaims, TokenRequest};
use crate::model::{unix_now, Protocol};
use crate::oauth::{basic_credentials, GrantType, TokenError, TokenParams, TokenResponse};
use crate::store::{Grant, StoreError};

/// `temporarily_unavailable`, with the store's failure logged.
fn store_failed(e: StoreError) -> TokenError {
    tracing::error!(error = %e, "store failure at the token endpoint");
    TokenError::unavailable()
}

/// Authenticates the client by HTTP Basic or `client_secret` in the body (constant-time
/// comparison); a client without a secret is public and sends only `client_id`.
fn authenticate<'a>(
    state: &'a Shared,
    headers: &HeaderMap,
    params: &TokenParams,
) -> Result<&'a ClientConfig, TokenError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(v) => {
            // RFC 6749 §5.2: a client that tried the Authorization header gets a 401 with
            // `WWW-Authenticate`, also when its header is unusable.
            let refused = |d: &str| TokenError::invalid_client(d).via_basic(true);
            let (id, secret) = basic_credentials(v.as_bytes()).map_err(refused)?;
            Some((id, secret))
        }
        None => None,
    };
    let (client_id, secret, via_basic) = match (&basic, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(TokenError::invalid_request(
                "use one client authentication method, not both",
            ))
        }
        (Some((id, secret)), None) => {
            if params.get("client_id").is_some_and(|b| b != id) {
                return Err(TokenError::invalid_request(
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            (id.clone(), Some(secret.clone()), true)
        }
        (None, secret) => {
            let id = params
                .get("client_id")
                .ok_or_else(|| TokenError::invalid_client("client authentication is required"))?;
            (id.to_owned(), secret.map(str::to_owned), false)
        }
    };
    let err = |d: &str| TokenError::invalid_client(d).via_basic(via_basic);
    let client = state
        .config
        .client(&client_id)
        .ok_or_else(|| err("client authentication failed"))?;
    match (&client.client_secret, secret) {
        (Some(expected), Some(given)) if secret_eq(expected.as_bytes(), given.as_bytes()) => {
            Ok(client)
        }
        (None, None) => Ok(client),
        _ => Err(err("client authentication failed")),
    }
}

/// `POST /oauth/token`.
pub async fn token(
    State(state): State<Shared>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // An over-limit or unreadable body is still answered with an RFC 6749 JSON error.
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return TokenError::invalid_request(format!("the request body was refused: {e}"))
                .into_response()
        }
    };
    match handle(&state, ip, &headers, &body).await {
        Ok(answer) => {
            let mut res = Json(answer).into_response();
            no_store(&mut res);
            res
        }
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &Shared,
    ip: ClientIp,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenResponse, TokenError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let params = TokenParams::parse(content_type, body)?;
    let grant_type = GrantType::from(
        params
            .get("grant_type")
            .ok_or_else(|| TokenError::invalid_request("grant_type is required"))?,
    );
    if !matches!(
        grant_type,
        GrantType::AuthorizationCode | GrantType::RefreshToken
    ) {
        return Err(TokenError::unsupported_grant_type(format!(
            "grant_type {:?} is not supported",
            grant_type.as_str()
        )));
    }
    let client = authenticate(state, headers, &params)?;
    if !client.grant_types.contains(&grant_type) {
        return Err(TokenError::unauthorized_client(format!(
            "the client may not use the {grant_type} grant"
        )));
    }
    if grant_type == GrantType::AuthorizationCode {
        code::grant(state, client, &params).await
    } else {
        refresh::grant(state, client, &params, headers, ip).await
    }
}

/// When a refresh token issued now expires (`None`: never).
fn refresh_expiry(state: &Shared) -> Option<i64> {
    let l = state.config.refresh_token_lifetime;
    (l > 0).then(|| unix_now() + l as i64)
}

/// Whether an exchange gets a refresh token: `offline_access` granted, the client allowed the
/// refresh grant, and the API allowing offline access.
fn offline_allowed(state: &Shared, client: &ClientConfig, grant: &Grant) -> bool {
    grant.scopes.iter().any(|s| s == "offline_access")
        && client.grant_types.contains(&GrantType::RefreshToken)
        && grant
            .audience
            .as_deref()
            .and_then(|a| state.config.api(a))
            .is_some_and(|a| a.allow_offline_access)
}

/// Signs the tokens of a grant (on the worker, or the blocking pool when signing is slow).
async fn sign(
    state: &Shared,
    client: &ClientConfig,
    grant: &Grant,
    claims: RuleClaims,
    protocol: Protocol,
) -> Result<Issued, TokenError> {
    let issuer = state.issuer.clone();
    let api = grant.audience.as_deref().and_then(|a| state.config.api(a));
    let req = token_request(
        client,
        api,
        grant,
        claims.user.clone(),
        protocol,
        Value::Null,
        0,
    );
    // Signing only: bounded CPU work, run inline unless signing was slow lately (crate::server::cpu).
    crate::server::cpu::CpuLane::shared()
        .run(false, move || issuer.sign(&req, &claims))
        .await
        .map_err(|_| TokenError::server_error())?
        .map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            TokenError::server_error()
        })
}

/// The user's `logins_count` at login, as the rules' claims in a stored grant keep it: what a
/// refresh's rules see as `context.stats.loginsCount`, and the one claim a refresh family keeps
/// of the login's (`code.rs`).
fn stored_logins_count(grant: &Grant) -> Option<&Value> {
    grant.claims.as_ref()?.pointer("/user/logins_count")
}

/// The issuer's request for a stored grant. Made on the worker from borrowed parts and moved into
/// the rules/signing task, so that task needs no copy of the client (its secret included), the
/// API or the grant.
fn token_request(
    client: &ClientConfig,
    api: Option<&crate::config::ApiConfig>,
    grant: &Grant,
    user: Value,
    protocol: Protocol,
    request: Value,
    logins_count: i64,
) -> TokenRequest {
    let mut req = TokenRequest::for_client(client, user)
        .scopes(grant.scopes.clone())
        .auth_time(grant.auth_time)
        .request(request)
        .logins_count(logins_count);
    if let Some(api) = api {
        req = req.api(api);
    }
    req.base_scope = grant.rule_scope.clone();
    req.session_id = grant.session_id.clone();
    // Only the code grant's ID token carries the authorization request's nonce.
    if protocol == Protocol::AuthorizationCode {
        req.nonce = grant.nonce.clone();
    }
    req.protocol(protocol)
}

/// `claimrules_tokens_issued_total` by grant type and the signing key's algorithm.
fn count_issued(state: &Shared, grant_type: &'static str) {
    let alg = state
        .issuer
        .keys()
        .signing()
        .map(|k| k.alg().as_str())
        .unwrap_or("none");
    metrics::counter!("claimrules_tokens_issued_total", "grant_type" => grant_type, "alg" => alg)
        .increment(1);
}

/// The RFC 6749 §5.1 answer; `scope` only when the rules changed it.
fn response(issued: &Issued, refresh: Option<String>) -> TokenResponse {
    let mut answer = TokenResponse::bearer(issued.access_token.clone(), issued.expires_in);
    answer.id_token = issued.id_token.clone();
    answer.refresh_token = refresh;
    answer.scope = issued.scope_changed.then(|| issued.scope.join(" "));
    answer
}

//! The refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).

use axum::http::HeaderMap;
use serde_json::{json, Map, Value};

use super::super::{rule_request, ClientIp};
use super::{count_issued, refresh_expiry, response, store_failed, stored_logins_count};
use super::{token_request, Shared};
use crate::config::ClientConfig;
use crate::crypto::{new_refresh_token, refresh_token_key};
use crate::issuer::{Endpoint, IssueError};
use crate::model::{unix_now, Protocol};
use crate::oauth::{TokenError, TokenParams, TokenResponse};
use crate::store::Rotation;

/// Fields a rule never sees in `context.request.body`.
const SECRET_FIELDS: [&str; 4] = ["client_secret", "refresh_token", "code", "code_verifier"];

/// The refresh token grant (RFC 6749 §6) with rotation: the rules run again, and the tokens
/// are answered only once the rotation is committed.
pub(super) async fn grant(
    state: &Shared,
    client: &ClientConfig,
    params: &TokenParams,
    headers: &HeaderMap,
    ip: ClientIp,
) -> Result<TokenResponse, TokenError> {
    let token = params
        .get("refresh_token")
        .ok_or_else(|| TokenError::invalid_request("refresh_token is required"))?;
    let old_hash = refresh_token_key(token);
    let now = unix_now();
    // The grant and its user's stored metadata in one read (one snapshot, one statement).
    let Some((mut grant, stored)) = state
        .store
        .refresh_grant_with_metadata(&old_hash, now)
        .await
        .map_err(store_failed)?
    else {
        // Unknown, expired, revoked or already used: rotate_refresh tells which, and revokes the
        // family on reuse (RFC 9700 §4.14.2).
        let outcome = state
            .store
            .rotate_refresh_without_grant(
                &old_hash,
                &refresh_token_key(&new_refresh_token()),
                now,
                None,
            )
            .await
            .map_err(store_failed)?;
        if let Rotation::Reused { .. } = outcome {
            tracing::warn!(client_id = %client.client_id, "refresh token reused; its grant family is revoked");
        }
        return Err(TokenError::invalid_grant(
            "the refresh token is invalid, expired or revoked",
        ));
    };
    if grant.client_id != client.client_id {
        return Err(TokenError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if let Some(scope) = params.get("scope") {
        let asked = crate::claims::split_scope(scope);
        if let Some(extra) = asked.iter().find(|s| !grant.scopes.contains(s)) {
            return Err(TokenError::invalid_scope(format!(
                "scope {extra:?} was not granted originally"
            )));
        }
        grant.scopes = asked;
        if let Some(rs) = &mut grant.rule_scope {
            rs.retain(|s| grant.scopes.contains(s));
        }
    }
    let user = state
        .config
        .user(&grant.user_id)
        .ok_or_else(|| TokenError::invalid_grant("the grant's user no longer exists"))?;
    let logins = stored_logins_count(&grant)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let body: Map<String, Value> = params
        .iter()
        .filter(|(k, _)| !SECRET_FIELDS.contains(k))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let request = rule_request(headers, ip, json!({}), Value::Object(body));
    let mut rule_user = user.to_rule_user(logins);
    if let Some(stored) = stored {
        stored.apply_to(&mut rule_user);
    }
    let issuer = state.issuer.clone();
    let api = grant.audience.as_deref().and_then(|a| state.config.api(a));
    let user_id = user.user_id.clone();
    let req = token_request(
        client,
        api,
        &grant,
        rule_user,
        Protocol::RefreshToken,
        request,
        logins,
    );
    // Its stored claims are not held across the waits below.
    drop(grant);
    let slot = state
        .rule_slots
        .acquire_slot(&client.client_id)
        .await
        .ok_or_else(TokenError::server_error)?;
    // Rules and both signatures in one task: inline on this worker, or one hand-off to the
    // blocking pool when the rules may wait on the network or ran slow lately
    // (crate::server::cpu). The tokens are only returned after the rotation below is committed,
    // so none leaves the server without its state stored; a lost race merely wastes two
    // signatures.
    let may_wait = issuer.rules().current().set.may_call_out();
    let (issued, metadata) = crate::server::cpu::CpuLane::shared()
        .run(may_wait, move || {
            let (result, metadata) = crate::rules::http::with_wait_slot(slot, || {
                issuer.run_rules_traced(&req, issuer.context(&req))
            });
            let issued = result
                .map_err(IssueError::from)
                .and_then(|claims| issuer.sign(&req, &claims));
            (issued, metadata)
        })
        .await
        .map_err(|_| TokenError::server_error())?;
    state
        .store
        .update_user_metadata(&user_id, &metadata)
        .await
        .map_err(store_failed)?;
    let issued = issued.map_err(|e| {
        if e.denial_message().is_none() {
            tracing::error!(error = %e, "rule pipeline or signing failed on refresh");
        }
        // invalid_grant with the rule's message, or server_error (crate::issuer::oauth).
        TokenError::from(e.oauth_error(Endpoint::Token))
    })?;
    let new_token = new_refresh_token();
    match state
        .store
        .rotate_refresh_without_grant(
            &old_hash,
            &refresh_token_key(&new_token),
            now,
            refresh_expiry(state),
        )
        .await
        .map_err(store_failed)?
    {
        Rotation::Rotated { .. } => {}
        Rotation::Reused { .. } => {
            tracing::warn!(client_id = %client.client_id, "refresh token reused; its grant family is revoked");
            return Err(TokenError::invalid_grant(
                "the refresh token was already used",
            ));
        }
        Rotation::Unknown | Rotation::Expired | Rotation::Revoked => {
            return Err(TokenError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ))
        }
    }
    count_issued(state, "refresh_token");
    Ok(response(&issued, Some(new_token)))
}

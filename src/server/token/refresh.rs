//! The refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).

use axum::http::HeaderMap;
use serde_json::{json, Map, Value};

use super::super::{rule_request, ClientIp};
use super::{count_issued, refresh_expiry, response, store_failed, stored_logins_count};
use super::{token_request, Shared};
use crate::config::ClientConfig;
use crate::crypto::{new_refresh_token, refresh_token_key};
use crate::issuer::Issued;
use crate::issuer::{Endpoint, IssueError};
use crate::model::{unix_now, Protocol};
use crate::oauth::{TokenError, TokenParams, TokenResponse};
use crate::store::{Grant, GrantWithMetadata, MetadataUpdates, Rotation, Store};

/// Fields a rule never sees in `context.request.body`.
const SECRET_FIELDS: [&str; 4] = ["client_secret", "refresh_token", "code", "code_verifier"];

/// The refresh token grant (RFC 6749 §6) with rotation: the token is rotated first, in the
/// store's open write transaction, which also gives its grant and the user's stored metadata
/// (no separate read); the rules and both signatures run while that transaction commits, and
/// the tokens are answered only once it is durable. A refresh refused after the rotation (a rule
/// denies or fails, a scope never granted, the request dropped) puts the tokens back
/// ([`Undo`]), so the presented token still refreshes.
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
    let new_token = new_refresh_token();
    let now = unix_now();
    // Armed before the rotation is queued: a request dropped while it waits for the answer still
    // puts the tokens back (the store runs the undo after the rotation).
    let undo = Undo {
        store: Some(state.store.clone()),
        old_hash: refresh_token_key(token),
        new_hash: refresh_token_key(&new_token),
    };
    let (rotation, committed) = state
        .store
        .rotate_refresh_early(
            &undo.old_hash,
            &undo.new_hash,
            now,
            refresh_expiry(state),
            &client.client_id,
        )
        .await;
    let (grant, stored) = match rotation {
        Ok(Rotation::Rotated { grant, .. }) => grant,
        Err(e) => {
            // The write failed and undid its own change: nothing to put back.
            undo.disarm();
            return Err(store_failed(e));
        }
        Ok(refused) => {
            undo.disarm();
            // A reuse revoked the family in that transaction: durable before the refusal.
            committed.wait().await.map_err(store_failed)?;
            return Err(refusal(client, refused));
        }
    };
    match issue(state, client, params, headers, ip, grant, stored).await {
        Ok(issued) => {
            // Answered only once the rotation is durable; rolled back, it never happened and
            // there is nothing to put back.
            let durable = committed.wait().await;
            undo.disarm();
            durable.map_err(store_failed)?;
            count_issued(state, "refresh_token");
            Ok(response(&issued, Some(new_token)))
        }
        Err(e) => {
            // Put back before the refusal is answered, so the client may retry at once.
            undo.run().await;
            Err(e)
        }
    }
}

/// The refusal of a token that was not rotated.
fn refusal(client: &ClientConfig, rotation: Rotation<GrantWithMetadata>) -> TokenError {
    match rotation {
        Rotation::OtherClient => {
            TokenError::invalid_grant("the refresh token was issued to another client")
        }
        Rotation::Reused { .. } => {
            tracing::warn!(client_id = %client.client_id, "refresh token reused; its grant family is revoked");
            TokenError::invalid_grant("the refresh token is invalid, expired or revoked")
        }
        _ => TokenError::invalid_grant("the refresh token is invalid, expired or revoked"),
    }
}

/// The rules and signatures of a rotated refresh: everything that may still refuse it.
async fn issue(
    state: &Shared,
    client: &ClientConfig,
    params: &TokenParams,
    headers: &HeaderMap,
    ip: ClientIp,
    mut grant: Grant,
    stored: Option<MetadataUpdates>,
) -> Result<Issued, TokenError> {
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
    // (crate::server::cpu).
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
    issued.map_err(|e| {
        if e.denial_message().is_none() {
            tracing::error!(error = %e, "rule pipeline or signing failed on refresh");
        }
        // invalid_grant with the rule's message, or server_error (crate::issuer::oauth).
        TokenError::from(e.oauth_error(Endpoint::Token))
    })
}

/// The undo of a rotation whose tokens were not answered ([`Store::undo_rotation`]): run before
/// a refusal is answered, or, when the request is dropped mid-way (the client went away), by a
/// task spawned from `drop`.
struct Undo {
    /// `None` once run or disarmed.
    store: Option<Store>,
    old_hash: String,
    new_hash: String,
}

impl Undo {
    /// The tokens were answered: nothing to undo.
    fn disarm(mut self) {
        self.store = None;
    }

    /// Undoes the rotation now.
    async fn run(mut self) {
        if let Some(store) = self.store.take() {
            undo(&store, &self.old_hash, &self.new_hash).await;
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let (old_hash, new_hash) = (
            std::mem::take(&mut self.old_hash),
            std::mem::take(&mut self.new_hash),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { undo(&store, &old_hash, &new_hash).await });
            }
            Err(_) => {
                tracing::warn!("a refused refresh could not put its token back: no runtime at hand")
            }
        }
    }
}

/// Runs [`Store::undo_rotation`]; a failure only costs the client its token (it signs in again).
async fn undo(store: &Store, old_hash: &str, new_hash: &str) {
    if let Err(e) = store.undo_rotation(old_hash, new_hash).await {
        tracing::warn!(error = %e, "a refused refresh could not put its token back");
    }
}

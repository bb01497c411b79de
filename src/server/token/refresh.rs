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
use crate::store::{Grant, MetadataUpdates, Rotation};

/// Fields a rule never sees in `context.request.body`.
const SECRET_FIELDS: [&str; 4] = ["client_secret", "refresh_token", "code", "code_verifier"];

/// The refresh token grant (RFC 6749 §6) with rotation: the token is rotated first, then the
/// rules run again and both tokens are signed while the rotation's commit runs, and the answer
/// waits for that commit. A refused refresh (a rule denied it, another client, a scope not
/// granted) hands the successor to no one and undoes the rotation, so the old token stays valid.
///
/// Why rotate first: the rotation's write reads the grant on the writer's connection, whose page
/// cache is warm, in the statement that marks the token used. Reading it first on a read
/// connection cost a second trip to the database whose cache every commit empties (about 7 % of
/// the CPU of a refresh, docs/perf/profile-refresh-2026-12-03.md).
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
    let new_token = new_refresh_token();
    let new_hash = refresh_token_key(&new_token);
    let (rotation, committed) = state
        .store
        .rotate_refresh_early(&old_hash, &new_hash, unix_now(), refresh_expiry(state))
        .await;
    let mut unspent = None;
    let answer = match rotation {
        Ok(Rotation::Rotated {
            grant: (grant, stored),
            ..
        }) => {
            // From here until the answer, a dropped request (the client went away) undoes the
            // rotation too: nobody will ever see the successor.
            unspent = Some(Unspent::new(state, &old_hash, &new_hash));
            rotated(state, client, params, headers, ip, grant, stored).await
        }
        Ok(Rotation::Reused { .. }) => {
            // RFC 9700 §4.14.2: the store revoked the family in the same transaction.
            tracing::warn!(client_id = %client.client_id, "refresh token reused; its grant family is revoked");
            Err(invalid_token())
        }
        Ok(Rotation::Unknown | Rotation::Expired | Rotation::Revoked) => Err(invalid_token()),
        Err(e) => Err(store_failed(e)),
    };
    // Nothing leaves before the rotation is durable. A rolled-back batch never rotated: the
    // signed tokens are dropped unseen and there is nothing to undo.
    if let Err(e) = committed.wait().await {
        if let Some(u) = &mut unspent {
            u.disarm();
        }
        return Err(store_failed(e));
    }
    match answer {
        Ok(issued) => {
            if let Some(u) = &mut unspent {
                u.disarm();
            }
            count_issued(state, "refresh_token");
            Ok(response(&issued, Some(new_token)))
        }
        Err(e) => {
            if let Some(u) = unspent {
                u.restore().await;
            }
            Err(e)
        }
    }
}

fn invalid_token() -> TokenError {
    TokenError::invalid_grant("the refresh token is invalid, expired or revoked")
}

/// A committed rotation whose successor nobody has seen yet: undone ([`Store::restore_refresh`])
/// when the refresh is refused, or when the request is dropped before its answer.
///
/// [`Store::restore_refresh`]: crate::store::Store::restore_refresh
struct Unspent {
    store: crate::store::Store,
    hashes: Option<(String, String)>,
}

impl Unspent {
    fn new(state: &Shared, old_hash: &str, new_hash: &str) -> Unspent {
        Unspent {
            store: state.store.clone(),
            hashes: Some((old_hash.to_owned(), new_hash.to_owned())),
        }
    }

    /// The successor is answered (or the rotation never committed): nothing to undo.
    fn disarm(&mut self) {
        self.hashes = None;
    }

    /// Undoes the rotation before the refusal is answered, so a retry finds the old token valid.
    async fn restore(mut self) {
        if let Some((old, new)) = self.hashes.take() {
            restore(&self.store, &old, &new).await;
        }
    }
}

impl Drop for Unspent {
    fn drop(&mut self) {
        let Some((old, new)) = self.hashes.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            rt.spawn(async move { restore(&store, &old, &new).await });
        }
    }
}

async fn restore(store: &crate::store::Store, old: &str, new: &str) {
    if let Err(e) = store.restore_refresh(old, new).await {
        tracing::error!(error = %e, "could not undo the rotation of a refused refresh; its refresh token is spent");
    }
}

/// The refresh once its token is rotated: the checks against the request, the rules and both
/// signatures; the metadata the rules set is stored (also when they denied).
async fn rotated(
    state: &Shared,
    client: &ClientConfig,
    params: &TokenParams,
    headers: &HeaderMap,
    ip: ClientIp,
    mut grant: Grant,
    stored: Option<MetadataUpdates>,
) -> Result<Issued, TokenError> {
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
    let (client_owned, api) = (
        client.clone(),
        grant
            .audience
            .as_deref()
            .and_then(|a| state.config.api(a))
            .cloned(),
    );
    // Moved into the blocking task, not cloned: nothing below needs it (a deep copy of the
    // stored claims per refresh otherwise).
    let g = grant;
    let slot = state
        .rule_slots
        .acquire_slot(&client.client_id)
        .await
        .ok_or_else(TokenError::server_error)?;
    // Rules and both signatures in one task: inline on this worker, or one hand-off to the
    // blocking pool when the rules may wait on the network or ran slow lately
    // (crate::server::cpu). The tokens are only answered after the rotation is committed
    // (`grant`), so none leaves the server without its state stored.
    let user_id = user.user_id.clone();
    let may_wait = issuer.rules().current().set.may_call_out();
    let (issued, metadata) = crate::server::cpu::CpuLane::shared()
        .run(may_wait, move || {
            let req = token_request(
                &client_owned,
                api.as_ref(),
                &g,
                rule_user,
                Protocol::RefreshToken,
                request,
                logins,
            );
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

//! The last step of a login: the rules run, and the browser is redirected with a fresh
//! authorization code (RFC 6749 §4.1.2).

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{json, Value};

use super::super::{rule_request, ClientIp, Shared};
use super::cookies::Session;
use super::AuthzRequest;
use crate::config::{ClientConfig, UserConfig};
use crate::crypto::{random_token, sha256_hex};
use crate::issuer::{Endpoint, TokenRequest};
use crate::model::{unix_now, Protocol};
use crate::oauth::{CodeResponse, ErrorCode};
use crate::store::Grant;

/// An authorization request its user has logged in to and consented to (or needs no consent
/// for): everything the rules and the code need.
pub(super) struct Approved<'a> {
    /// The validated request.
    pub(super) req: &'a AuthzRequest,
    /// Its client.
    pub(super) client: &'a ClientConfig,
    /// The logged-in user.
    pub(super) user: &'a UserConfig,
    /// The user's session.
    pub(super) session: Session,
    /// The browser request's headers (`context.request`).
    pub(super) headers: &'a HeaderMap,
    /// The browser's address (`context.request.ip`).
    pub(super) ip: ClientIp,
}

/// Runs the rules and redirects with a fresh authorization code.
pub(super) async fn finish(state: &Shared, login: Approved<'_>) -> Response {
    let Approved {
        req,
        client,
        user,
        session,
        headers,
        ip,
    } = login;
    let unavailable = || req.error(state, ErrorCode::TemporarilyUnavailable, "try again later");
    let logins = match state.store.increment_logins(&user.user_id).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "login counter update failed");
            return unavailable();
        }
    };
    let request = rule_request(headers, ip, Value::Object(req.query.clone()), json!({}));
    let session_id = session.hash.get(..16).unwrap_or("").to_owned();
    let api = req.audience.as_deref().and_then(|a| state.config.api(a));
    let mut rule_user = user.to_rule_user(logins);
    match state.store.user_metadata(&user.user_id).await {
        Ok(Some(stored)) => stored.apply_to(&mut rule_user),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading the user's stored metadata failed");
            return unavailable();
        }
    }
    let issuer = state.issuer.clone();
    let auth_time = session.auth_time;
    let (client_owned, api_owned) = (client.clone(), api.cloned());
    let (scopes, nonce, req_copy) = (req.scopes.clone(), req.nonce.clone(), request.clone());
    let sid = session_id.clone();
    let Some(slot) = state.rule_slots.acquire_slot(&client.client_id).await else {
        return req.error(
            state,
            ErrorCode::ServerError,
            "the login could not be completed",
        );
    };
    let may_wait = issuer.rules().current().set.may_call_out();
    let traced = crate::server::cpu::CpuLane::shared()
        .run(may_wait, move || {
            let mut treq = TokenRequest::for_client(&client_owned, rule_user)
                .scopes(scopes)
                .auth_time(auth_time)
                .protocol(Protocol::AuthorizationCode)
                .request(req_copy)
                .logins_count(logins)
                .session_id(sid);
            if let Some(api) = &api_owned {
                treq = treq.api(api);
            }
            treq.nonce = nonce;
            // A rule waiting on an API gives its slot up meanwhile (see `RuleSlots`).
            crate::rules::http::with_wait_slot(slot, || {
                issuer.run_rules_traced(&treq, issuer.context(&treq))
            })
        })
        .await;
    let outcome = match traced {
        Ok((result, metadata)) => {
            // Stored on success and before a denial (a rule may count refused attempts);
            // the engine has already dropped the updates of a failed run.
            if let Err(e) = state
                .store
                .update_user_metadata(&user.user_id, &metadata)
                .await
            {
                tracing::error!(error = %e, "storing the rules' metadata updates failed");
                return unavailable();
            }
            Ok(result)
        }
        Err(e) => Err(e),
    };
    let claims = match outcome {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if e.is_denial() {
                tracing::info!(rule = e.rule().unwrap_or("?"), "login denied by rule");
            } else {
                tracing::error!(error = %e, "rule pipeline failed");
            }
            // access_denied with the rule's message, or server_error (crate::issuer::oauth).
            let answer = e.oauth_error(Endpoint::Authorize);
            return req.error(state, answer.error, &answer.description);
        }
        Err(e) => {
            tracing::error!(error = %e, "rule task failed");
            return req.error(
                state,
                ErrorCode::ServerError,
                "the login could not be completed",
            );
        }
    };
    let code = random_token(32);
    let grant = Grant {
        client_id: client.client_id.clone(),
        user_id: user.user_id.clone(),
        audience: req.audience.clone(),
        scopes: req.scopes.clone(),
        redirect_uri: req.redirect_uri.clone(),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        auth_time,
        session_id: Some(session_id),
        request,
        rule_scope: claims.scope_changed.then(|| claims.scope.clone()),
        claims: serde_json::to_value(&claims).ok(),
    };
    let expires = unix_now() + state.config.code_lifetime as i64;
    if let Err(e) = state
        .store
        .put_code(&sha256_hex(&code), &grant, expires)
        .await
    {
        tracing::error!(error = %e, "storing the authorization code failed");
        return unavailable();
    }
    let answer = CodeResponse::new(code, req.state.clone(), state.issuer.issuer().to_owned());
    Redirect::to(&answer.location(&req.redirect_uri)).into_response()
}

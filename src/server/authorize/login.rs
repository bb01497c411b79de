//! `POST /login` and `POST /consent`: the forms of the login and consent pages. Both carry the
//! original request (`authz`, validated again) and the CSRF token.

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::super::throttle::{AccountKey, Refused};
use super::super::{pages, ClientIp, Shared};
use super::cookies::{
    cookie, csrf_ok, csrf_refused, csrf_token, session_user, Session, SESSION_COOKIE,
};
use super::finish::{finish, Approved};
use super::{client_name, proceed, validate};
use crate::crypto::{random_token, sha256_hex};
use crate::model::unix_now;
use crate::oauth::{AuthorizeError, ErrorCode};

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    authz: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `POST /login`.
pub async fn login(
    State(state): State<Shared>,
    ip: ClientIp,
    jar: CookieJar,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let req = match validate(&state, &form.authz) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(client) = state.config.client(&req.client_id) else {
        return AuthorizeError::page("Unknown application", "").into_response();
    };
    // Checked on the cookie the browser sent, before a new one may be set.
    let csrf_valid = csrf_ok(&jar, &form.csrf);
    let (csrf, jar) = csrf_token(&state, jar);
    let again = |status: StatusCode, msg: &str| {
        let page = pages::login_page(
            &pages::base_path(state.issuer.issuer()),
            client_name(client),
            &req.raw,
            &csrf,
            Some(msg),
            &form.username,
        );
        (jar.clone(), pages::html(status, page)).into_response()
    };
    if !csrf_valid {
        return again(
            StatusCode::FORBIDDEN,
            "Your session expired or the form was tampered with. Please try again.",
        );
    }
    let ip_text = ip.to_string();
    // The account limits key on the account the name resolves to (however it was spelled, by
    // email or username), or on the normalized name when it names none.
    let user = state.config.user_by_login(&form.username).cloned();
    let account = match &user {
        Some(u) => AccountKey::user(&u.user_id),
        None => AccountKey::unknown(&form.username),
    };
    let throttled = |refused: Refused| {
        let msg = match refused {
            Refused::Locked(wait) => {
                format!("Too many failed attempts. Try again in {wait} seconds.")
            }
            Refused::Busy => "Too many login attempts at once. Try again in a moment.".to_owned(),
        };
        metrics::counter!("claimrules_logins_total", "result" => "throttled").increment(1);
        let mut res = again(StatusCode::TOO_MANY_REQUESTS, &msg);
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(refused.retry_after()),
        );
        res
    };
    // Counted as a failure before the password is checked (see `throttle`), so a burst of
    // parallel attempts gets no more checks than the limit allows.
    let attempt = match state.throttle.begin(&account, &ip_text) {
        Ok(a) => a,
        Err(refused) => return throttled(refused),
    };
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| crate::password::dummy_hash().to_owned());
    // Argon2 runs on its own bounded threads (never the runtime's blocking pool, which rules
    // and signing need). Unknown users are checked against a dummy hash so both failures take
    // the same time.
    let ok = match state.passwords.verify(form.password.clone(), hash).await {
        Ok(ok) => ok,
        Err(e) => {
            attempt.cancel();
            tracing::warn!(error = %e, "password check refused");
            let mut res = again(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is busy. Please try again.",
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return res;
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        // Already counted by `begin`.
        drop(attempt);
        metrics::counter!("claimrules_logins_total", "result" => "failed").increment(1);
        return again(StatusCode::UNAUTHORIZED, "Wrong email or password.");
    };
    attempt.succeeded();
    metrics::counter!("claimrules_logins_total", "result" => "ok").increment(1);
    let raw = random_token(32);
    let now = unix_now();
    let lifetime = state.config.session_lifetime as i64;
    let hash = sha256_hex(&raw);
    if let Err(e) = state
        .store
        .create_session(&hash, &user.user_id, now, now + lifetime)
        .await
    {
        tracing::error!(error = %e, "storing the session failed");
        return again(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is busy. Please try again.",
        );
    }
    let fresh = Session {
        user_id: user.user_id.clone(),
        auth_time: now,
        hash,
    };
    let jar = jar.add(cookie(&state, SESSION_COOKIE, raw, lifetime));
    proceed(&state, req, jar, &headers, ip, Some(fresh)).await
}

/// The consent form's fields.
#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    authz: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
}

/// `POST /consent`.
pub async fn consent(
    State(state): State<Shared>,
    ip: ClientIp,
    jar: CookieJar,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let req = match validate(&state, &form.authz) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if !csrf_ok(&jar, &form.csrf) {
        return csrf_refused();
    }
    let Some(session) = session_user(&state, &jar).await else {
        // The session ended: start over, which shows the login page.
        let base = pages::base_path(state.issuer.issuer());
        return Redirect::to(&format!("{base}authorize?{}", req.raw)).into_response();
    };
    let (Some(client), Some(user)) = (
        state.config.client(&req.client_id),
        state.config.user(&session.user_id),
    ) else {
        return req.error(
            &state,
            ErrorCode::LoginRequired,
            "the session's user no longer exists",
        );
    };
    if form.decision != "allow" {
        metrics::counter!("claimrules_consents_total", "decision" => "deny").increment(1);
        return req.error(&state, ErrorCode::AccessDenied, "the user denied access");
    }
    metrics::counter!("claimrules_consents_total", "decision" => "allow").increment(1);
    if let Err(e) = state
        .store
        .save_consent(
            &user.user_id,
            &client.client_id,
            req.audience.as_deref().unwrap_or(""),
            &req.scopes,
        )
        .await
    {
        tracing::error!(error = %e, "storing consent failed");
        return req.error(&state, ErrorCode::TemporarilyUnavailable, "try again later");
    }
    let approved = Approved {
        req: &req,
        client,
        user,
        session,
        headers: &headers,
        ip,
    };
    finish(&state, approved).await
}

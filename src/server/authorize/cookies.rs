//! The browser's two cookies: the login session and the CSRF double-submit token, read and
//! written through axum-extra's [`CookieJar`] (a handler returns the jar with its answer, which
//! adds the `Set-Cookie` headers).

use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;

use super::super::{pages, Shared};
use crate::crypto::{random_token, secret_eq, sha256_hex};
use crate::model::unix_now;

/// Name of the login session cookie.
pub const SESSION_COOKIE: &str = "claimrules_session";
/// Name of the CSRF double-submit cookie.
pub const CSRF_COOKIE: &str = "claimrules_csrf";
/// The CSRF cookie's lifetime, seconds.
const CSRF_LIFETIME: i64 = 3600;

/// A logged-in user: the user id, when they authenticated (Unix seconds), and the hash of the
/// session cookie (the store's key; its first 16 characters are `context.sessionID`).
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) user_id: String,
    pub(super) auth_time: i64,
    pub(super) hash: String,
}

/// The logged-in user, from the session cookie.
pub(super) async fn session_user(state: &Shared, jar: &CookieJar) -> Option<Session> {
    let raw = jar.get(SESSION_COOKIE)?.value();
    let hash = sha256_hex(raw);
    let session = state.store.session(&hash, unix_now()).await.ok()??;
    Some(Session {
        user_id: session.user_id,
        auth_time: session.auth_time,
        hash,
    })
}

/// A cookie of this server: `HttpOnly`, `SameSite=Lax`, `Secure` when required, and `Path` the
/// server's base path ([`pages::base_path`]: `/`, or the prefix a host app nests it under, so
/// the host's own routes never receive these cookies).
pub(super) fn cookie(
    state: &Shared,
    name: &'static str,
    value: String,
    max_age: i64,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .path(pages::base_path(state.issuer.issuer()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.secure_cookies)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build()
}

/// The CSRF token of this browser, with the jar that sets it when it is new.
pub(super) fn csrf_token(state: &Shared, jar: CookieJar) -> (String, CookieJar) {
    match jar
        .get(CSRF_COOKIE)
        .map(Cookie::value)
        .filter(|c| c.len() >= 22)
    {
        Some(c) => (c.to_owned(), jar),
        None => {
            let c = random_token(24);
            let jar = jar.add(cookie(state, CSRF_COOKIE, c.clone(), CSRF_LIFETIME));
            (c, jar)
        }
    }
}

/// Whether a form's CSRF token is the one of the browser's cookie (compared in constant time).
/// Checked on the request's jar, before [`csrf_token`] may add a new cookie.
pub(super) fn csrf_ok(jar: &CookieJar, submitted: &str) -> bool {
    jar.get(CSRF_COOKIE).is_some_and(|c| {
        !submitted.is_empty() && secret_eq(c.value().as_bytes(), submitted.as_bytes())
    })
}

/// The answer to a form whose CSRF token is missing or wrong: 403 and a page saying so.
pub(super) fn csrf_refused() -> Response {
    pages::html(
        StatusCode::FORBIDDEN,
        pages::error_page(
            "Request refused",
            "The form's security token is missing or wrong. Go back and try again.",
        ),
    )
}

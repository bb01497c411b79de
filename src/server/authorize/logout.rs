//! `GET /logout` and `POST /logout`: ending the browser's session (OpenID Connect
//! RP-Initiated Logout 1.0).

use axum::extract::{Form, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::{pages, Shared};
use super::cookies::{cookie, csrf_ok, csrf_refused, csrf_token, session_user, SESSION_COOKIE};
use crate::crypto::sha256_hex;

/// The `sub` of an ID token this server issued to one of its clients, for `id_token_hint`
/// (OpenID Connect RP-Initiated Logout 1.0 §2): signature by a published key, `iss` this
/// issuer, `aud` a registered client, `typ` not an access token's. An expired token is still a
/// valid hint (the spec allows it: logout often comes after the ID token expired).
fn hint_subject(state: &Shared, token: &str) -> Option<String> {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let header = decode_header(token).ok()?;
    if !matches!(
        header.alg,
        Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
    ) || header.typ.as_deref() == Some("at+jwt")
    {
        return None;
    }
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(state.issuer.jwks()).ok()?;
    let key = DecodingKey::from_jwk(set.find(header.kid.as_deref()?)?).ok()?;
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.set_issuer(&[state.issuer.issuer()]);
    v.set_required_spec_claims(&["iss", "sub", "aud"]);
    let claims = decode::<Map<String, Value>>(token, &key, &v).ok()?.claims;
    let registered = |a: &Value| a.as_str().is_some_and(|a| state.config.client(a).is_some());
    let aud_ok = match claims.get("aud") {
        Some(Value::Array(a)) => a.iter().any(registered),
        Some(a) => registered(a),
        None => false,
    };
    aud_ok
        .then(|| claims.get("sub").and_then(Value::as_str).map(str::to_owned))
        .flatten()
}

/// Ends the browser's session: deletes it and clears the cookie (empty, `Max-Age=0`).
async fn end_session(state: &Shared, jar: CookieJar) -> Response {
    if let Some(raw) = jar.get(SESSION_COOKIE) {
        let _ = state.store.delete_session(&sha256_hex(raw.value())).await;
    }
    let jar = jar.add(cookie(state, SESSION_COOKIE, String::new(), 0));
    let page = pages::error_page("Logged out", "You are logged out.");
    (jar, pages::html(StatusCode::OK, page)).into_response()
}

/// `GET /logout` (the discovery document's `end_session_endpoint`).
///
/// A plain GET must not end a session: any page could embed `<img src=".../logout">` and log
/// the user out of every application (cross-site logout). As Keycloak and Auth0's OIDC logout
/// do, and as OpenID Connect RP-Initiated Logout 1.0 §2-3 describes, the session ends at once
/// only when the request carries an `id_token_hint` this server issued for the logged-in user
/// (which a third-party page does not have); otherwise the user is asked to confirm, and the
/// confirmation posts back with the CSRF token. (`post_logout_redirect_uri` is not supported:
/// without registered logout URIs the spec forbids redirecting, so the user stays on the
/// "logged out" page.)
pub async fn logout(
    State(state): State<Shared>,
    jar: CookieJar,
    RawQuery(raw): RawQuery,
) -> Response {
    let hint = url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "id_token_hint")
        .map(|(_, v)| v.into_owned());
    let session = session_user(&state, &jar).await;
    if let Some(hint) = hint {
        let Some(sub) = hint_subject(&state, &hint) else {
            return pages::html(
                StatusCode::BAD_REQUEST,
                pages::error_page(
                    "Invalid logout request",
                    "The id_token_hint is not an ID token issued by this server.",
                ),
            );
        };
        match &session {
            Some(s) if s.user_id == sub => return end_session(&state, jar).await,
            None => return end_session(&state, jar).await,
            // Another user's token: ask, as without a hint.
            Some(_) => {}
        }
    } else if session.is_none() {
        return end_session(&state, jar).await;
    }
    let (csrf, jar) = csrf_token(&state, jar);
    let base = pages::base_path(state.issuer.issuer());
    let page = pages::logout_page(&base, &csrf);
    (jar, pages::html(StatusCode::OK, page)).into_response()
}

/// The logout confirmation's fields.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: the confirmed logout, with the CSRF token of the confirmation page.
pub async fn logout_confirmed(
    State(state): State<Shared>,
    jar: CookieJar,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !csrf_ok(&jar, &form.csrf) {
        return csrf_refused();
    }
    end_session(&state, jar).await
}

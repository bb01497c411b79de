//! `GET /authorize` with the login and consent pages (RFC 6749 §4.1.1, §4.1.2).
//!
//! The original request's query string travels through the login and consent forms (`authz`)
//! and is validated again on every step, so a tampered form can do no more than a direct
//! `/authorize` could. Here: validating the request ([`validate`]) and choosing the next step
//! ([`proceed`]); the forms are in `login.rs`, the rules and the code in `finish.rs`, the
//! cookies in `cookies.rs`, logout in `logout.rs`.

mod cookies;
mod finish;
mod login;
mod logout;

pub use login::{consent, login};
pub use logout::{logout, logout_confirmed};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use serde_json::{Map, Value};

use super::{pages, ClientIp, Shared};
use crate::config::ClientConfig;
use crate::crypto::valid_pkce_challenge;
use crate::model::unix_now;
use crate::oauth::{AuthorizeError, ErrorCode, GrantType};
use cookies::{csrf_token, session_user, Session};
use finish::{finish, Approved};
/// Longest accepted `state` / `nonce`.
const MAX_PARAM_LEN: usize = 2048;
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// A validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthzRequest {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    state: Option<String>,
    nonce: Option<String>,
    audience: Option<String>,
    code_challenge: Option<String>,
    prompt: Vec<String>,
    /// OIDC `max_age`: the longest time since the user last authenticated, seconds.
    max_age: Option<i64>,
    /// The raw query string, carried through the forms.
    raw: String,
    /// The parameters as `context.request.query`.
    query: Map<String, Value>,
}

/// True when `given` equals a registered URI byte for byte, or, for native clients, differs from
/// a registered loopback IP URI only in the port (RFC 8252 §7.3).
fn redirect_allowed(client: &ClientConfig, given: &str) -> bool {
    if client.redirect_uris.iter().any(|r| r == given) {
        return true;
    }
    if !client.native {
        return false;
    }
    let Ok(g) = url::Url::parse(given) else {
        return false;
    };
    let loopback_ip = |u: &url::Url| {
        u.scheme() == "http"
            && matches!(u.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                | matches!(u.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
    };
    loopback_ip(&g)
        && client.redirect_uris.iter().any(|r| {
            url::Url::parse(r).is_ok_and(|mut r| {
                let mut g = g.clone();
                let _ = r.set_port(None);
                let _ = g.set_port(None);
                loopback_ip(&r) && r.as_str() == g.as_str()
            })
        })
}

/// Validates an authorization request. Errors before the redirect URI is trusted are pages.
pub fn validate(state: &Shared, raw: &str) -> Result<AuthzRequest, AuthorizeError> {
    // The query travels through the login and consent forms (decoded, so a tampered form can
    // put anything in it) and back into a `Location` header: it may hold only what a URI's
    // query may (RFC 3986 §3.4: visible ASCII, everything else percent-encoded). Control
    // characters made the redirect header invalid (a 500); they are a bad request.
    if raw.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(AuthorizeError::page(
            "Invalid request",
            "The request holds characters a URL may not contain.",
        ));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    let mut query = Map::new();
    // Every repeated name, not just the last: a repeated client_id followed by any other
    // repeated parameter must still be refused as a page.
    let mut duplicates: Vec<String> = Vec::new();
    for (k, v) in &pairs {
        if query.insert(k.clone(), Value::String(v.clone())).is_some() {
            duplicates.push(k.clone());
        }
    }
    let get = |k: &str| query.get(k).and_then(Value::as_str).map(str::to_owned);
    let client_id = get("client_id").filter(|s| !s.is_empty()).ok_or_else(|| {
        AuthorizeError::page(
            "Invalid request",
            "The request names no client (client_id).",
        )
    })?;
    let client = state.config.client(&client_id).ok_or_else(|| {
        AuthorizeError::page(
            "Unknown application",
            "No application is registered with this client_id.",
        )
    })?;
    if duplicates
        .iter()
        .any(|d| d == "client_id" || d == "redirect_uri")
    {
        return Err(AuthorizeError::page(
            "Invalid request",
            "client_id and redirect_uri may appear only once.",
        ));
    }
    let redirect_uri = match get("redirect_uri") {
        Some(r) if redirect_allowed(client, &r) => r,
        Some(_) => {
            return Err(AuthorizeError::page(
                "Invalid redirect URI",
                "The redirect_uri is not registered for this application.",
            ))
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return Err(AuthorizeError::page(
                "Invalid request",
                "The request has no redirect_uri and the application registers several.",
            ))
        }
    };
    let state_param = get("state");
    let fail = |code: ErrorCode, description: String| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        code,
        description,
        state: state_param.clone().filter(|s| s.len() <= MAX_PARAM_LEN),
        iss: state.issuer.issuer().trim_end_matches('/').to_owned() + "/",
    };
    if let Some(d) = duplicates.first() {
        return Err(fail(
            ErrorCode::InvalidRequest,
            format!("parameter {d} appears more than once"),
        ));
    }
    if state_param
        .as_ref()
        .is_some_and(|s| s.len() > MAX_PARAM_LEN)
    {
        return Err(fail(ErrorCode::InvalidRequest, "state is too long".into()));
    }
    match get("response_type").as_deref() {
        Some("code") => {}
        None => {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "response_type is required".into(),
            ))
        }
        Some(_) => {
            return Err(fail(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported".into(),
            ))
        }
    }
    if !client.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(fail(
            ErrorCode::UnauthorizedClient,
            "the client may not use the authorization code grant".into(),
        ));
    }
    let audience = get("audience").filter(|a| !a.is_empty());
    let api =
        match &audience {
            Some(a) => Some(state.config.api(a).ok_or_else(|| {
                fail(ErrorCode::InvalidRequest, format!("unknown audience {a:?}"))
            })?),
            None => None,
        };
    let scopes = crate::claims::split_scope(&get("scope").unwrap_or_default());
    for s in &scopes {
        let known = OIDC_SCOPES.contains(&s.as_str()) || api.is_some_and(|a| a.scopes.contains(s));
        if !known {
            return Err(fail(
                ErrorCode::InvalidScope,
                format!("unknown scope {s:?}"),
            ));
        }
    }
    let nonce = get("nonce");
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_PARAM_LEN) {
        return Err(fail(ErrorCode::InvalidRequest, "nonce is too long".into()));
    }
    let code_challenge = get("code_challenge");
    match (
        code_challenge.as_deref(),
        get("code_challenge_method").as_deref(),
    ) {
        (None, Some(_)) => {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "code_challenge_method without code_challenge".into(),
            ))
        }
        (Some(_), None) | (Some(_), Some("plain")) => {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "code_challenge_method must be S256 (plain is not allowed)".into(),
            ))
        }
        (Some(c), Some("S256")) if !valid_pkce_challenge(c) => {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "code_challenge must be the base64url SHA-256 of the verifier (43 characters)"
                    .into(),
            ))
        }
        (Some(_), Some("S256")) | (None, None) => {}
        (_, Some(m)) => {
            return Err(fail(
                ErrorCode::InvalidRequest,
                format!("unsupported code_challenge_method {m:?}"),
            ))
        }
    }
    let public = client.client_secret.is_none();
    if code_challenge.is_none() && (public || state.config.require_pkce) {
        return Err(fail(
            ErrorCode::InvalidRequest,
            "PKCE (code_challenge with S256) is required for this client".into(),
        ));
    }
    let prompt: Vec<String> = get("prompt")
        .map(|p| p.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    if prompt
        .iter()
        .any(|p| !["none", "login", "consent"].contains(&p.as_str()))
        || (prompt.iter().any(|p| p == "none") && prompt.len() > 1)
    {
        return Err(fail(
            ErrorCode::InvalidRequest,
            "unsupported prompt value".into(),
        ));
    }
    // OIDC Core §3.1.2.1: a non-negative number of seconds.
    let max_age = match get("max_age") {
        None => None,
        Some(m) => Some(
            m.parse::<u32>()
                .ok()
                .filter(|_| m.bytes().all(|b| b.is_ascii_digit()))
                .map(i64::from)
                .ok_or_else(|| {
                    fail(
                        ErrorCode::InvalidRequest,
                        "max_age must be a non-negative number of seconds".into(),
                    )
                })?,
        ),
    };
    Ok(AuthzRequest {
        client_id,
        redirect_uri,
        scopes,
        state: state_param,
        nonce,
        audience,
        code_challenge,
        prompt,
        max_age,
        raw: raw.to_owned(),
        query,
    })
}

impl AuthzRequest {
    /// The validated redirect URI (registered for the client, or a native client's loopback URI
    /// with another port).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The client.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn error(&self, state: &Shared, code: ErrorCode, description: &str) -> Response {
        AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            code,
            description: description.to_owned(),
            state: self.state.clone(),
            iss: state.issuer.issuer().to_owned(),
        }
        .into_response()
    }
}

fn client_name(client: &ClientConfig) -> &str {
    client.name.as_deref().unwrap_or(&client.client_id)
}

/// `GET /authorize`.
pub async fn authorize(
    State(state): State<Shared>,
    ip: ClientIp,
    jar: CookieJar,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let req = match validate(&state, raw.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    proceed(&state, req, jar, &headers, ip, None).await
}

/// Login → consent → rules → code, skipping what the session and stored consent already cover.
/// The answer carries the jar's new cookies.
async fn proceed(
    state: &Shared,
    req: AuthzRequest,
    jar: CookieJar,
    headers: &HeaderMap,
    ip: ClientIp,
    fresh_session: Option<Session>,
) -> Response {
    let Some(client) = state.config.client(&req.client_id) else {
        return AuthorizeError::page("Unknown application", "").into_response();
    };
    let prompt_none = req.prompt.iter().any(|p| p == "none");
    // OIDC Core §3.1.2.1: "max_age=0 is equivalent to prompt=login"; a session older than
    // max_age must log in again (§15.1). The ID token always carries `auth_time`.
    let force_login = req.prompt.iter().any(|p| p == "login") || req.max_age == Some(0);
    let session = match fresh_session {
        Some(s) => Some(s),
        None if force_login => None,
        None => session_user(state, &jar)
            .await
            .filter(|s| req.max_age.is_none_or(|m| unix_now() - s.auth_time <= m)),
    };
    let Some(session) = session else {
        if prompt_none {
            let e = req.error(state, ErrorCode::LoginRequired, "the user is not logged in");
            return (jar, e).into_response();
        }
        let (csrf, jar) = csrf_token(state, jar);
        let base = pages::base_path(state.issuer.issuer());
        let page = pages::login_page(&base, client_name(client), &req.raw, &csrf, None, "");
        return (jar, pages::html(StatusCode::OK, page)).into_response();
    };
    let Some(user) = state.config.user(&session.user_id) else {
        let e = req.error(
            state,
            ErrorCode::LoginRequired,
            "the session's user no longer exists",
        );
        return (jar, e).into_response();
    };
    let needs_consent = if client.first_party {
        false
    } else if req.prompt.iter().any(|p| p == "consent") {
        true
    } else {
        match state
            .store
            .consent_covers(
                &user.user_id,
                &client.client_id,
                req.audience.as_deref().unwrap_or(""),
                &req.scopes,
            )
            .await
        {
            Ok(covered) => !covered,
            Err(e) => {
                tracing::error!(error = %e, "consent lookup failed");
                let e = req.error(state, ErrorCode::TemporarilyUnavailable, "try again later");
                return (jar, e).into_response();
            }
        }
    };
    if needs_consent {
        if prompt_none {
            let e = req.error(
                state,
                ErrorCode::ConsentRequired,
                "the user has not consented",
            );
            return (jar, e).into_response();
        }
        let (csrf, jar) = csrf_token(state, jar);
        let api_name = req
            .audience
            .as_deref()
            .and_then(|a| state.config.api(a))
            .map(|a| a.name.clone().unwrap_or_else(|| a.identifier.clone()));
        let display = user.name.clone().unwrap_or_else(|| user.email.clone());
        let page = pages::consent_page(
            &pages::base_path(state.issuer.issuer()),
            client_name(client),
            &display,
            api_name.as_deref(),
            &req.scopes,
            &req.raw,
            &csrf,
        );
        return (jar, pages::html(StatusCode::OK, page)).into_response();
    }
    let approved = Approved {
        req: &req,
        client,
        user,
        session,
        headers,
        ip,
    };
    (jar, finish(state, approved).await).into_response()
}

//! `GET /authorize` with the login and consent pages (RFC 6749 §4.1.1, §4.1.2).
//!
//! The original request's query string travels through the login and consent forms (`authz`)
//! and is validated again on every step, so a tampered form can do no more than a direct
//! `/authorize` could.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::errors::{with_params, AuthorizeError};
use super::throttle::{AccountKey, Refused};
use super::{client_ip, cookie, pages, rule_request, set_cookie, Shared};
use crate::config::{ClientConfig, UserConfig};
use crate::crypto::{random_token, secret_eq, sha256_hex, valid_pkce_challenge};
use crate::issuer::{Endpoint, TokenRequest};
use crate::model::{unix_now, Protocol};
use crate::store::Grant;

/// Name of the login session cookie.
pub const SESSION_COOKIE: &str = "claimrules_session";
/// Name of the CSRF double-submit cookie.
pub const CSRF_COOKIE: &str = "claimrules_csrf";
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
    let fail = |code: &'static str, description: String| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        code,
        description,
        state: state_param.clone().filter(|s| s.len() <= MAX_PARAM_LEN),
        iss: state.issuer.issuer().trim_end_matches('/').to_owned() + "/",
    };
    if let Some(d) = duplicates.first() {
        return Err(fail(
            "invalid_request",
            format!("parameter {d} appears more than once"),
        ));
    }
    if state_param
        .as_ref()
        .is_some_and(|s| s.len() > MAX_PARAM_LEN)
    {
        return Err(fail("invalid_request", "state is too long".into()));
    }
    match get("response_type").as_deref() {
        Some("code") => {}
        None => return Err(fail("invalid_request", "response_type is required".into())),
        Some(_) => {
            return Err(fail(
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            ))
        }
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(fail(
            "unauthorized_client",
            "the client may not use the authorization code grant".into(),
        ));
    }
    let audience = get("audience").filter(|a| !a.is_empty());
    let api = match &audience {
        Some(a) => Some(
            state
                .config
                .api(a)
                .ok_or_else(|| fail("invalid_request", format!("unknown audience {a:?}")))?,
        ),
        None => None,
    };
    let scopes = crate::claims::split_scope(&get("scope").unwrap_or_default());
    for s in &scopes {
        let known = OIDC_SCOPES.contains(&s.as_str()) || api.is_some_and(|a| a.scopes.contains(s));
        if !known {
            return Err(fail("invalid_scope", format!("unknown scope {s:?}")));
        }
    }
    let nonce = get("nonce");
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_PARAM_LEN) {
        return Err(fail("invalid_request", "nonce is too long".into()));
    }
    let code_challenge = get("code_challenge");
    match (
        code_challenge.as_deref(),
        get("code_challenge_method").as_deref(),
    ) {
        (None, Some(_)) => {
            return Err(fail(
                "invalid_request",
                "code_challenge_method without code_challenge".into(),
            ))
        }
        (Some(_), None) | (Some(_), Some("plain")) => {
            return Err(fail(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not allowed)".into(),
            ))
        }
        (Some(c), Some("S256")) if !valid_pkce_challenge(c) => {
            return Err(fail(
                "invalid_request",
                "code_challenge must be the base64url SHA-256 of the verifier (43 characters)"
                    .into(),
            ))
        }
        (Some(_), Some("S256")) | (None, None) => {}
        (_, Some(m)) => {
            return Err(fail(
                "invalid_request",
                format!("unsupported code_challenge_method {m:?}"),
            ))
        }
    }
    let public = client.client_secret.is_none();
    if code_challenge.is_none() && (public || state.config.require_pkce) {
        return Err(fail(
            "invalid_request",
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
        return Err(fail("invalid_request", "unsupported prompt value".into()));
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
                        "invalid_request",
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

    fn error(&self, state: &Shared, code: &'static str, description: &str) -> Response {
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

/// The logged-in user, from the session cookie.
async fn session_user(state: &Shared, headers: &HeaderMap) -> Option<(String, i64, String)> {
    let raw = cookie(headers, SESSION_COOKIE)?;
    let hash = sha256_hex(&raw);
    let session = state.store.session(&hash, unix_now()).await.ok()??;
    Some((session.user_id, session.auth_time, hash))
}

/// The CSRF token of this browser, and a `Set-Cookie` when it is new.
fn csrf_token(state: &Shared, headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, CSRF_COOKIE).filter(|c| c.len() >= 22) {
        Some(c) => (c, None),
        None => {
            let c = random_token(24);
            let set = set_cookie(
                CSRF_COOKIE,
                &c,
                3600,
                state.secure_cookies,
                &pages::base_path(state.issuer.issuer()),
            );
            (c, Some(set))
        }
    }
}

fn csrf_ok(headers: &HeaderMap, submitted: &str) -> bool {
    cookie(headers, CSRF_COOKIE)
        .is_some_and(|c| !submitted.is_empty() && secret_eq(c.as_bytes(), submitted.as_bytes()))
}

fn with_cookie(mut res: Response, set: Option<String>) -> Response {
    if let Some(v) = set.and_then(|s| HeaderValue::from_str(&s).ok()) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

fn client_name(client: &ClientConfig) -> &str {
    client.name.as_deref().unwrap_or(&client.client_id)
}

/// `GET /authorize`.
pub async fn authorize(
    State(state): State<Shared>,
    peer: super::Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let req = match validate(&state, raw.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    proceed(&state, req, &headers, peer.as_ref().map(|e| &e.0), None).await
}

/// Login → consent → rules → code, skipping what the session and stored consent already cover.
async fn proceed(
    state: &Shared,
    req: AuthzRequest,
    headers: &HeaderMap,
    connect: Option<&ConnectInfo<SocketAddr>>,
    fresh_session: Option<(String, i64, String)>,
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
        None => session_user(state, headers)
            .await
            .filter(|(_, auth_time, _)| req.max_age.is_none_or(|m| unix_now() - auth_time <= m)),
    };
    let Some((user_id, auth_time, session_hash)) = session else {
        if prompt_none {
            return req.error(state, "login_required", "the user is not logged in");
        }
        let (csrf, set) = csrf_token(state, headers);
        let base = pages::base_path(state.issuer.issuer());
        let page = pages::login_page(&base, client_name(client), &req.raw, &csrf, None, "");
        return with_cookie(pages::html(StatusCode::OK, page), set);
    };
    let Some(user) = state.config.user(&user_id) else {
        return req.error(
            state,
            "login_required",
            "the session's user no longer exists",
        );
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
                return req.error(state, "temporarily_unavailable", "try again later");
            }
        }
    };
    if needs_consent {
        if prompt_none {
            return req.error(state, "consent_required", "the user has not consented");
        }
        let (csrf, set) = csrf_token(state, headers);
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
        return with_cookie(pages::html(StatusCode::OK, page), set);
    }
    finish(
        state,
        &req,
        client,
        user,
        auth_time,
        &session_hash,
        headers,
        connect,
    )
    .await
}

/// Runs the rules and redirects with a fresh authorization code.
#[allow(clippy::too_many_arguments)]
async fn finish(
    state: &Shared,
    req: &AuthzRequest,
    client: &ClientConfig,
    user: &UserConfig,
    auth_time: i64,
    session_hash: &str,
    headers: &HeaderMap,
    connect: Option<&ConnectInfo<SocketAddr>>,
) -> Response {
    let logins = match state.store.increment_logins(&user.user_id).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "login counter update failed");
            return req.error(state, "temporarily_unavailable", "try again later");
        }
    };
    let request = rule_request(
        headers,
        connect,
        Value::Object(req.query.clone()),
        json!({}),
    );
    let session_id = session_hash.get(..16).unwrap_or("").to_owned();
    let api = req.audience.as_deref().and_then(|a| state.config.api(a));
    let mut rule_user = user.to_rule_user(logins);
    match state.store.user_metadata(&user.user_id).await {
        Ok(Some(stored)) => stored.apply_to(&mut rule_user),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading the user's stored metadata failed");
            return req.error(state, "temporarily_unavailable", "try again later");
        }
    }
    let issuer = state.issuer.clone();
    let (client_owned, api_owned) = (client.clone(), api.cloned());
    let (scopes, nonce, req_copy) = (req.scopes.clone(), req.nonce.clone(), request.clone());
    let sid = session_id.clone();
    let Some(slot) = state.rule_slots.acquire_slot(&client.client_id).await else {
        return req.error(state, "server_error", "the login could not be completed");
    };
    let traced = tokio::task::spawn_blocking(move || {
        super::cpu_bound_thread();
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
                return req.error(state, "temporarily_unavailable", "try again later");
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
            return req.error(state, answer.error.as_str(), &answer.description);
        }
        Err(e) => {
            tracing::error!(error = %e, "rule task failed");
            return req.error(state, "server_error", "the login could not be completed");
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
        return req.error(state, "temporarily_unavailable", "try again later");
    }
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = req.state.as_deref() {
        params.push(("state", s));
    }
    params.push(("iss", state.issuer.issuer()));
    Redirect::to(&with_params(&req.redirect_uri, &params)).into_response()
}

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
    peer: super::Peer,
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
    let (csrf, set) = csrf_token(&state, &headers);
    let again = |status: StatusCode, msg: &str| {
        let page = pages::login_page(
            &pages::base_path(state.issuer.issuer()),
            client_name(client),
            &req.raw,
            &csrf,
            Some(msg),
            &form.username,
        );
        with_cookie(pages::html(status, page), set.clone())
    };
    if !csrf_ok(&headers, &form.csrf) {
        return again(
            StatusCode::FORBIDDEN,
            "Your session expired or the form was tampered with. Please try again.",
        );
    }
    let ip = client_ip(peer.as_ref().map(|e| &e.0));
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
    let attempt = match state.throttle.begin(&account, &ip) {
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
    if let Err(e) = state
        .store
        .create_session(&sha256_hex(&raw), &user.user_id, now, now + lifetime)
        .await
    {
        tracing::error!(error = %e, "storing the session failed");
        return again(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is busy. Please try again.",
        );
    }
    let fresh = Some((user.user_id.clone(), now, sha256_hex(&raw)));
    let res = proceed(&state, req, &headers, peer.as_ref().map(|e| &e.0), fresh).await;
    with_cookie(
        with_cookie(
            res,
            Some(set_cookie(
                SESSION_COOKIE,
                &raw,
                lifetime,
                state.secure_cookies,
                &pages::base_path(state.issuer.issuer()),
            )),
        ),
        set,
    )
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
    peer: super::Peer,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let req = match validate(&state, &form.authz) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if !csrf_ok(&headers, &form.csrf) {
        return pages::html(
            StatusCode::FORBIDDEN,
            pages::error_page(
                "Request refused",
                "The form's security token is missing or wrong. Go back and try again.",
            ),
        );
    }
    let Some((user_id, auth_time, session_hash)) = session_user(&state, &headers).await else {
        // The session ended: start over, which shows the login page.
        let base = pages::base_path(state.issuer.issuer());
        return Redirect::to(&format!("{base}authorize?{}", req.raw)).into_response();
    };
    let (Some(client), Some(user)) = (
        state.config.client(&req.client_id),
        state.config.user(&user_id),
    ) else {
        return req.error(
            &state,
            "login_required",
            "the session's user no longer exists",
        );
    };
    if form.decision != "allow" {
        metrics::counter!("claimrules_consents_total", "decision" => "deny").increment(1);
        return req.error(&state, "access_denied", "the user denied access");
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
        return req.error(&state, "temporarily_unavailable", "try again later");
    }
    finish(
        &state,
        &req,
        client,
        user,
        auth_time,
        &session_hash,
        &headers,
        peer.as_ref().map(|e| &e.0),
    )
    .await
}

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

/// Ends the browser's session: deletes it and clears the cookie.
async fn end_session(state: &Shared, headers: &HeaderMap) -> Response {
    if let Some(raw) = cookie(headers, SESSION_COOKIE) {
        let _ = state.store.delete_session(&sha256_hex(&raw)).await;
    }
    with_cookie(
        pages::html(
            StatusCode::OK,
            pages::error_page("Logged out", "You are logged out."),
        ),
        Some(set_cookie(
            SESSION_COOKIE,
            "",
            0,
            state.secure_cookies,
            &pages::base_path(state.issuer.issuer()),
        )),
    )
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
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let hint = url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "id_token_hint")
        .map(|(_, v)| v.into_owned());
    let session = session_user(&state, &headers).await;
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
            Some((user_id, _, _)) if *user_id == sub => return end_session(&state, &headers).await,
            None => return end_session(&state, &headers).await,
            // Another user's token: ask, as without a hint.
            Some(_) => {}
        }
    } else if session.is_none() {
        return end_session(&state, &headers).await;
    }
    let (csrf, set) = csrf_token(&state, &headers);
    let base = pages::base_path(state.issuer.issuer());
    with_cookie(
        pages::html(StatusCode::OK, pages::logout_page(&base, &csrf)),
        set,
    )
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
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !csrf_ok(&headers, &form.csrf) {
        return pages::html(
            StatusCode::FORBIDDEN,
            pages::error_page(
                "Request refused",
                "The form's security token is missing or wrong. Go back and try again.",
            ),
        );
    }
    end_session(&state, &headers).await
}

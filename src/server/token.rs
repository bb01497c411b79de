//! `POST /oauth/token`: the authorization code and refresh token grants (RFC 6749 §4.1.3, §6).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::errors::TokenError;
use super::{rule_request, Shared};
use crate::config::ClientConfig;
use crate::crypto::{pkce_s256_matches, random_token, secret_eq, sha256_hex, valid_pkce_verifier};
use crate::issuer::{Endpoint, IssueError, Issued, RuleClaims, TokenRequest};
use crate::model::{unix_now, Protocol};
use crate::store::{CodeRedemption, Grant, Rotation, StoreError};

/// Fields a rule never sees in `context.request.body`.
const SECRET_FIELDS: [&str; 4] = ["client_secret", "refresh_token", "code", "code_verifier"];

/// A JSON object's members in document order, repeated keys included.
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Token request parameters, each at most once (RFC 6749 §3.2).
#[derive(Debug, Default)]
pub struct TokenParams(HashMap<String, String>);

impl TokenParams {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Parses a form or JSON body.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<TokenParams, TokenError> {
        let ctype = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut map = HashMap::new();
        if ctype.starts_with("application/json") {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| TokenError::invalid_request(format!("malformed JSON body: {e}")))?;
            if !value.is_object() {
                return Err(TokenError::invalid_request(
                    "the JSON body must be an object",
                ));
            }
            // serde_json's `Map` silently keeps the last of repeated keys; read the members in
            // order so a repeated parameter is refused as it is in a form body.
            let Members(members) = serde_json::from_slice(body)
                .map_err(|e| TokenError::invalid_request(format!("malformed JSON body: {e}")))?;
            for (k, v) in members {
                if map.contains_key(&k) {
                    return Err(TokenError::invalid_request(format!(
                        "parameter {k} appears more than once"
                    )));
                }
                let v = match v {
                    Value::String(s) => s,
                    Value::Null => continue,
                    _ => {
                        return Err(TokenError::invalid_request(format!(
                            "parameter {k} must be a string"
                        )))
                    }
                };
                map.insert(k, v);
            }
        } else if ctype.starts_with("application/x-www-form-urlencoded") || ctype.is_empty() {
            if std::str::from_utf8(body).is_err() {
                return Err(TokenError::invalid_request("the body is not UTF-8"));
            }
            for (k, v) in url::form_urlencoded::parse(body) {
                if map.insert(k.to_string(), v.into_owned()).is_some() {
                    return Err(TokenError::invalid_request(format!(
                        "parameter {k} appears more than once"
                    )));
                }
            }
        } else {
            return Err(TokenError::invalid_request(
                "the body must be application/x-www-form-urlencoded or application/json",
            ));
        }
        Ok(TokenParams(map))
    }
}

fn store_failed(e: StoreError) -> TokenError {
    tracing::error!(error = %e, "store failure at the token endpoint");
    TokenError::unavailable()
}

/// The client id and secret of an `Authorization: Basic` header, decoded strictly: the scheme
/// in any case (RFC 7235 §2.1), one or more spaces, standard base64 with its padding (RFC 7617
/// §2), `id:secret` split at the first colon, and each part form-urlencoded as RFC 6749 §2.3.1
/// requires: `+` is a space, `%XX` must be two hex digits, the result must be UTF-8, and every
/// other byte stands for itself (`&` and `=` are part of the secret, never separators).
pub fn basic_credentials(header: &[u8]) -> Result<(String, String), &'static str> {
    let malformed = "malformed Basic credentials";
    let v = std::str::from_utf8(header).map_err(|_| malformed)?;
    let (scheme, rest) = v
        .split_once(' ')
        .ok_or("unsupported Authorization scheme")?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("unsupported Authorization scheme");
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.contains([' ', '\t']) {
        return Err(malformed);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(malformed)?;
    let (id, secret) = decoded.split_once(':').ok_or(malformed)?;
    let id = form_component(id).ok_or(malformed)?;
    let secret = form_component(secret).ok_or(malformed)?;
    if id.is_empty() {
        return Err(malformed);
    }
    Ok((id, secret))
}

/// Decodes one `application/x-www-form-urlencoded` component strictly: `None` for a `%` not
/// followed by two hex digits, for a result that is not UTF-8, and for control characters.
fn form_component(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    let text = String::from_utf8(out).ok()?;
    (!text.chars().any(char::is_control)).then_some(text)
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
            let refused = |d: &str| TokenError {
                basic: true,
                ..TokenError::invalid_client(d)
            };
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
    let err = |d: &str| TokenError {
        basic: via_basic,
        ..TokenError::invalid_client(d)
    };
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
    peer: super::Peer,
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
    match handle(&state, peer.as_ref().map(|e| &e.0), &headers, &body).await {
        Ok(v) => {
            let mut res = Json(v).into_response();
            let h = res.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            res
        }
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &Shared,
    connect: Option<&ConnectInfo<SocketAddr>>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, TokenError> {
    let params = TokenParams::parse(headers, body)?;
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| TokenError::invalid_request("grant_type is required"))?
        .to_owned();
    if grant_type != "authorization_code" && grant_type != "refresh_token" {
        return Err(TokenError::unsupported_grant_type(format!(
            "grant_type {grant_type:?} is not supported"
        )));
    }
    let client = authenticate(state, headers, &params)?;
    if !client.grant_types.contains(&grant_type) {
        return Err(TokenError::unauthorized_client(format!(
            "the client may not use the {grant_type} grant"
        )));
    }
    if grant_type == "authorization_code" {
        code_grant(state, client, &params).await
    } else {
        refresh_grant(state, client, &params, headers, connect).await
    }
}

async fn code_grant(
    state: &Shared,
    client: &ClientConfig,
    params: &TokenParams,
) -> Result<Value, TokenError> {
    let code = params
        .get("code")
        .ok_or_else(|| TokenError::invalid_request("code is required"))?;
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| TokenError::invalid_request("redirect_uri is required"))?;
    let verifier = params.get("code_verifier");
    if verifier.is_some_and(|v| !valid_pkce_verifier(v)) {
        return Err(TokenError::invalid_request(
            "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]",
        ));
    }
    let code_hash = sha256_hex(code);
    // The redemption is answered inside the writer's open transaction, so the checks and the
    // two signatures overlap its commit (fsync); nothing is answered before it is durable. A
    // rolled-back batch means the code was never redeemed: the tokens are dropped unseen.
    let (redemption, committed) = state.store.redeem_code_early(&code_hash, unix_now()).await;
    let answer = match redemption {
        Ok(redemption) => redeemed(state, client, redirect_uri, verifier, redemption).await,
        Err(e) => Err(store_failed(e)),
    };
    committed.wait().await.map_err(store_failed)?;
    let (issued, refresh) = answer?;
    let refresh = match refresh {
        Some((token, family, grant)) => {
            state
                .store
                .put_refresh(&sha256_hex(&token), &family, &grant, refresh_expiry(state))
                .await
                .map_err(store_failed)?;
            state
                .store
                .link_code_family(&code_hash, &family)
                .await
                .map_err(store_failed)?;
            Some(token)
        }
        None => None,
    };
    count_issued(state, "authorization_code");
    Ok(response(&issued, refresh))
}

/// A refresh token to store for an exchange: the token, its new family and the grant.
type NewRefresh = Option<(String, String, Grant)>;

/// The code grant once the code is redeemed (not yet durably): checks and signatures.
async fn redeemed(
    state: &Shared,
    client: &ClientConfig,
    redirect_uri: &str,
    verifier: Option<&str>,
    redemption: CodeRedemption,
) -> Result<(Issued, NewRefresh), TokenError> {
    let grant = match redemption {
        CodeRedemption::Redeemed(g) => g,
        CodeRedemption::Unknown => {
            return Err(TokenError::invalid_grant("unknown authorization code"))
        }
        CodeRedemption::Expired => {
            return Err(TokenError::invalid_grant("the authorization code expired"))
        }
        CodeRedemption::Replayed { .. } => {
            // RFC 6749 §4.1.2: a reused code revokes what was issued from it; the store did so
            // in the redemption's own transaction.
            tracing::warn!(client_id = %client.client_id, "authorization code replayed; its grant is revoked");
            return Err(TokenError::invalid_grant(
                "the authorization code was already used",
            ));
        }
    };
    if grant.client_id != client.client_id {
        return Err(TokenError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if grant.redirect_uri != redirect_uri {
        return Err(TokenError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    // A failed check here burns the code: it was redeemed above, before any check. That is
    // deliberate and what Keycloak and Auth0 do: a code is strictly one-shot (RFC 6749 §4.1.2),
    // a thief holding a code gets exactly one guess at its verifier, and the legitimate client
    // simply starts a new authorization. Keeping the code until the right verifier would mean
    // unlimited guesses and a redemption that is no longer one atomic step.
    match (&grant.code_challenge, verifier) {
        (Some(challenge), Some(v)) if pkce_s256_matches(v, challenge) => {}
        (Some(_), Some(_)) => return Err(TokenError::invalid_grant("PKCE verification failed")),
        (Some(_), None) => return Err(TokenError::invalid_grant("code_verifier is required")),
        (None, Some(_)) => {
            return Err(TokenError::invalid_grant(
                "code_verifier sent but the authorization request had no code_challenge",
            ))
        }
        (None, None) => {}
    }
    let claims: RuleClaims = grant
        .claims
        .clone()
        .and_then(|c| serde_json::from_value(c).ok())
        .ok_or_else(TokenError::server_error)?;
    let issued = sign(state, client, &grant, claims, Protocol::AuthorizationCode).await?;
    let refresh =
        offline_allowed(state, client, &grant).then(|| (random_token(32), random_token(16), grant));
    Ok((issued, refresh))
}

fn refresh_expiry(state: &Shared) -> Option<i64> {
    let l = state.config.refresh_token_lifetime;
    (l > 0).then(|| unix_now() + l as i64)
}

fn offline_allowed(state: &Shared, client: &ClientConfig, grant: &Grant) -> bool {
    grant.scopes.iter().any(|s| s == "offline_access")
        && client.grant_types.iter().any(|g| g == "refresh_token")
        && grant
            .audience
            .as_deref()
            .and_then(|a| state.config.api(a))
            .is_some_and(|a| a.allow_offline_access)
}

async fn sign(
    state: &Shared,
    client: &ClientConfig,
    grant: &Grant,
    claims: RuleClaims,
    protocol: Protocol,
) -> Result<Issued, TokenError> {
    let issuer = state.issuer.clone();
    let client = client.clone();
    let api = grant
        .audience
        .as_deref()
        .and_then(|a| state.config.api(a))
        .cloned();
    let grant = grant.clone();
    tokio::task::spawn_blocking(move || {
        super::cpu_bound_thread();
        let req = token_request(
            &client,
            api.as_ref(),
            &grant,
            claims.user.clone(),
            protocol,
            Value::Null,
            0,
        );
        issuer.sign(&req, &claims)
    })
    .await
    .map_err(|_| TokenError::server_error())?
    .map_err(|e| {
        tracing::error!(error = %e, "signing failed");
        TokenError::server_error()
    })
}

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

fn response(issued: &Issued, refresh: Option<String>) -> Value {
    let mut out = Map::new();
    out.insert("access_token".into(), json!(issued.access_token));
    out.insert("token_type".into(), json!("Bearer"));
    out.insert("expires_in".into(), json!(issued.expires_in));
    if let Some(id) = &issued.id_token {
        out.insert("id_token".into(), json!(id));
    }
    if let Some(r) = refresh {
        out.insert("refresh_token".into(), json!(r));
    }
    if issued.scope_changed {
        out.insert("scope".into(), json!(issued.scope.join(" ")));
    }
    Value::Object(out)
}

async fn refresh_grant(
    state: &Shared,
    client: &ClientConfig,
    params: &TokenParams,
    headers: &HeaderMap,
    connect: Option<&ConnectInfo<SocketAddr>>,
) -> Result<Value, TokenError> {
    let token = params
        .get("refresh_token")
        .ok_or_else(|| TokenError::invalid_request("refresh_token is required"))?;
    let old_hash = sha256_hex(token);
    let now = unix_now();
    let Some(mut grant) = state
        .store
        .refresh_grant(&old_hash, now)
        .await
        .map_err(store_failed)?
    else {
        // Unknown, expired, revoked or already used: rotate_refresh tells which, and revokes the
        // family on reuse (RFC 9700 §4.14.2).
        let outcome = state
            .store
            .rotate_refresh(&old_hash, &sha256_hex(&random_token(32)), now, None)
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
    let logins = grant
        .claims
        .as_ref()
        .and_then(|c| c.pointer("/user/logins_count"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let body: Map<String, Value> = params
        .0
        .iter()
        .filter(|(k, _)| !SECRET_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let request = rule_request(headers, connect, json!({}), Value::Object(body));
    let mut rule_user = user.to_rule_user(logins);
    if let Some(stored) = state
        .store
        .user_metadata(&user.user_id)
        .await
        .map_err(store_failed)?
    {
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
    let g = grant.clone();
    let slot = state
        .rule_slots
        .acquire_slot(&client.client_id)
        .await
        .ok_or_else(TokenError::server_error)?;
    // Rules and both signatures in one blocking task (one thread hand-off per request). The
    // tokens are only returned after the rotation below is committed, so none leaves the server
    // without its state stored; a lost race merely wastes two signatures.
    let user_id = user.user_id.clone();
    let (issued, metadata) = tokio::task::spawn_blocking(move || {
        super::cpu_bound_thread();
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
    let issued = issued.map_err(|e| {
        if e.denial_message().is_none() {
            tracing::error!(error = %e, "rule pipeline or signing failed on refresh");
        }
        // invalid_grant with the rule's message, or server_error (crate::issuer::oauth).
        TokenError::from(e.oauth_error(Endpoint::Token))
    })?;
    let new_token = random_token(32);
    match state
        .store
        .rotate_refresh(
            &old_hash,
            &sha256_hex(&new_token),
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

#[cfg(test)]
mod tests {
    use super::basic_credentials;
    use base64::Engine as _;

    fn basic(raw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn basic_credentials_are_decoded_strictly() {
        let ok = |h: &str| basic_credentials(h.as_bytes());
        assert_eq!(
            ok(&basic("web:s3cret")),
            Ok(("web".into(), "s3cret".into()))
        );
        assert_eq!(
            ok(&basic("a%20b:x+y%3A%26")),
            Ok(("a b".into(), "x y:&".into()))
        );
        // The secret is taken whole: `&` and `=` are not form separators.
        assert_eq!(ok(&basic("web:s3cret&junk=1")).unwrap().1, "s3cret&junk=1");
        // Any case of the scheme, several spaces.
        for scheme in ["basic", "BASIC", "bAsIc"] {
            assert!(ok(&basic("web:s").replacen("Basic", scheme, 1)).is_ok());
        }
        assert!(ok(&basic("web:s").replacen(' ', "   ", 1)).is_ok());
        for bad in [
            basic("web:%"),
            basic("web:%4"),
            basic("web:%zz"),
            basic("web:%+f"),
            basic("web:%FF"),
            basic("web:a%0Ab"),
            basic("web"),
            basic(":secret"),
            "Basic".into(),
            "Basic ".into(),
            "Basic d2ViOnM=x".into(),
            "Basic d2ViOnM".into(),
            "Bearer d2ViOnM=".into(),
            "Basicd2ViOnM=".into(),
        ] {
            assert!(ok(&bad).is_err(), "{bad:?}");
        }
    }
}

//! Ory Hydra's token hook (`oauth2.token_hook`), `POST /hooks/hydra/token`.
//!
//! Hydra v2 posts `{"session": {...}, "request": {...}}` before it issues tokens, for every grant
//! type. The answer Hydra understands: `200 {"session":{"access_token":{..},"id_token":{..}}}`
//! *replaces* the session's extra claims (access token) and the ID token's extra claims; `204`
//! keeps them; `403` fails the token request with `access_denied`; any other status fails it
//! with `server_error`.
//!
//! Mapping (documented in the README, "Use it from your token server"):
//! - `user`: every claim of `session.id_token.id_token_claims.ext` and of `session.extra` that is
//!   neither a registered JWT claim nor namespaced (ID-token claims win on conflict), plus
//!   `user_id` = the session's subject, `username` when Hydra has one, and empty `app_metadata`
//!   / `user_metadata` maps unless the claims carry them.
//! - `context`: `clientID`, `clientName` and `clientMetadata` from `request.client_id` /
//!   `request.client`, `protocol` from the grant type ([`GrantType::protocol`]),
//!   `grantedScopes`, `grantedAudience`, `request.body` = `request.payload` (one-element arrays
//!   flattened, credentials such as `assertion` removed), `request.query` = `{}`,
//!   `authentication.methods` from the ID token's `amr`/`auth_time`, `sessionID` from `sid`.
//! - `context.accessToken` starts with the claims of `session.extra` a rule could set itself
//!   (namespaced ones); `context.idToken` with the namespaced and OIDC profile claims of the ID
//!   token's `ext`. Rules change or remove those (set to `()`) and add new ones. Other existing
//!   claims are carried over untouched, so Hydra's replacement never loses them.
//! - A scope rewrite cannot be expressed in Hydra's answer: it is logged as a warning and ignored.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use super::{
    log_rule_error, read_json, run_rules, split_claims, warn_dropped, warn_scope_ignored,
    without_secrets, HookState,
};
use crate::claims::{is_namespaced, TokenKind, REGISTERED_CLAIMS};
use crate::model::Protocol;
use crate::oauth::GrantType;

/// Go marshals nil slices and maps as `null`: read those as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The body Hydra posts to the token hook (fields claimrules reads; others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenHookRequest {
    /// The OAuth 2.0 session (consent data, subject, extra claims).
    #[serde(default, deserialize_with = "null_as_default")]
    pub session: Session,
    /// The token request.
    pub request: GrantRequest,
}

/// Hydra's `session`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Session {
    /// The ID token part of the session.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id_token: IdTokenSession,
    /// The access token's extra claims (consent's `session.access_token`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub extra: Map<String, Value>,
    /// The client the session belongs to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_id: String,
}

/// Hydra's `session.id_token`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IdTokenSession {
    /// The ID token's claims; its `ext` holds consent's `session.id_token`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id_token_claims: Map<String, Value>,
    /// The login's username, often empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub username: String,
    /// The end user's subject.
    #[serde(default, deserialize_with = "null_as_default")]
    pub subject: String,
}

/// Hydra's `request`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GrantRequest {
    /// The client's id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_id: String,
    /// The sanitized client (newer Hydra versions): `client_name`, `metadata`, ...
    #[serde(default)]
    pub client: Option<Value>,
    /// Scopes granted to the client.
    #[serde(default, deserialize_with = "null_as_default")]
    pub granted_scopes: Vec<String>,
    /// Audiences granted to the client.
    #[serde(default, deserialize_with = "null_as_default")]
    pub granted_audience: Vec<String>,
    /// The request's grant types (one in practice).
    #[serde(default, deserialize_with = "null_as_default")]
    pub grant_types: Vec<GrantType>,
    /// Allowed form fields of the token request (`assertion` for the JWT-bearer grant).
    #[serde(default, deserialize_with = "null_as_default")]
    pub payload: Map<String, Value>,
}

/// What the rules start with for one hook call, and what is carried over untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The `user` object.
    pub user: Value,
    /// The `context` object (with `accessToken` / `idToken` prefilled).
    pub context: Value,
    /// Access-token claims the rules may change (prefilled into `context.accessToken`).
    pub access_editable: Map<String, Value>,
    /// Access-token claims carried over untouched.
    pub access_fixed: Map<String, Value>,
    /// ID-token claims the rules may change (prefilled into `context.idToken`).
    pub id_editable: Map<String, Value>,
    /// ID-token claims carried over untouched.
    pub id_fixed: Map<String, Value>,
}

fn is_user_claim(key: &str, reserved: &[String]) -> bool {
    !REGISTERED_CLAIMS.contains(&key) && !is_namespaced(key, reserved) && key != "ext"
}

/// Maps Hydra's hook body to the rules' `user` and `context`.
pub fn map_request(req: &TokenHookRequest, reserved: &[String]) -> Mapped {
    let claims = &req.session.id_token.id_token_claims;
    let ext = claims
        .get("ext")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();

    let mut user = Map::new();
    for (k, v) in req.session.extra.iter().chain(ext.iter()) {
        if is_user_claim(k, reserved) && !v.is_null() {
            user.insert(k.clone(), v.clone());
        }
    }
    let subject = [
        req.session.id_token.subject.as_str(),
        claims.get("sub").and_then(Value::as_str).unwrap_or(""),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("");
    user.insert("user_id".into(), json!(subject));
    if !req.session.id_token.username.is_empty() {
        user.insert("username".into(), json!(req.session.id_token.username));
    }
    for m in ["app_metadata", "user_metadata"] {
        if !user.get(m).is_some_and(Value::is_object) {
            user.insert(m.into(), json!({}));
        }
    }

    let (access_editable, access_fixed) =
        split_claims(TokenKind::AccessToken, &req.session.extra, reserved);
    let (id_editable, id_fixed) = split_claims(TokenKind::IdToken, &ext, reserved);

    let r = &req.request;
    // No grant type is a front-channel login (`GrantType::protocol` of an empty value).
    let protocol = r
        .grant_types
        .first()
        .map_or(Protocol::AuthorizationCode, GrantType::protocol);
    let body: Map<String, Value> = without_secrets(
        r.payload
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Array(items) if items.len() == 1 => items[0].clone(),
                    other => other.clone(),
                };
                (k.clone(), v)
            })
            .collect(),
    );
    let client = r.client.as_ref().and_then(Value::as_object);
    let client_name = client
        .and_then(|c| c.get("client_name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let client_metadata = client
        .and_then(|c| c.get("metadata"))
        .filter(|m| m.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let methods: Vec<Value> = claims
        .get("amr")
        .and_then(Value::as_array)
        .map(|amr| {
            amr.iter()
                .map(|name| json!({"name": name, "timestamp": claims.get("auth_time").cloned().unwrap_or(Value::Null)}))
                .collect()
        })
        .unwrap_or_default();

    let mut context = json!({
        "clientID": r.client_id,
        "clientName": client_name,
        "clientMetadata": client_metadata,
        "protocol": protocol.as_str(),
        "grantedScopes": r.granted_scopes,
        "grantedAudience": r.granted_audience,
        "request": {"query": {}, "body": body},
        "authentication": {"methods": methods},
        "accessToken": access_editable,
        "idToken": id_editable,
    });
    if let Some(sid) = claims.get("sid").and_then(Value::as_str) {
        context["sessionID"] = json!(sid);
    }
    Mapped {
        user: Value::Object(user),
        context,
        access_editable,
        access_fixed,
        id_editable,
        id_fixed,
    }
}

/// `POST /hooks/hydra/token`.
pub(super) async fn handle(State(st): State<HookState>, req: Request) -> Response {
    let parsed: TokenHookRequest = match read_json(
        req,
        st.hydra_header.as_ref(),
        st.cfg.hydra_api_key.as_deref(),
        st.cfg.allow_unauthenticated_loopback,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let reserved = st.reserved_hosts();
    let mapped = map_request(&parsed, &reserved);
    let (version, result) =
        match run_rules(&st.rules, mapped.user.clone(), mapped.context.clone()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(hook = "hydra", error = %e, "cannot run the rules");
                return e.into_response();
            }
        };
    let subject = mapped.user["user_id"].as_str().unwrap_or("").to_owned();
    let out = match result {
        Ok(out) => out,
        Err(err) => {
            log_rule_error("hydra", version, &err);
            return if err.is_denial() {
                let message = match &err {
                    crate::rules::RuleError::Denied { message, .. } => message.clone(),
                    _ => String::new(),
                };
                (
                    StatusCode::FORBIDDEN,
                    Json(json!({"error": "access_denied", "error_description": message})),
                )
                    .into_response()
            } else {
                // Script internals stay in the log; Hydra fails the request on any other status.
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "server_error", "error_description": "the rules failed"})),
                )
                    .into_response()
            };
        }
    };
    warn_scope_ignored("hydra", version, &out.scope);
    warn_dropped("hydra", version, &out);
    tracing::info!(
        hook = "hydra",
        rules_version = version,
        subject = %subject,
        client_id = %parsed.request.client_id,
        "rules ran for a Hydra token"
    );
    if out.access_token == mapped.access_editable && out.id_token == mapped.id_editable {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut access = mapped.access_fixed;
    access.extend(out.access_token);
    let mut id = mapped.id_fixed;
    id.extend(out.id_token);
    (
        StatusCode::OK,
        Json(json!({"session": {"access_token": access, "id_token": id}})),
    )
        .into_response()
}

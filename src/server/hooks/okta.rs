//! Okta's token inline hook (`com.okta.oauth2.tokens.transform`), `POST /hooks/okta/token`.
//!
//! Okta posts the tokens it is about to mint (`data.identity.claims`, `data.access.claims`,
//! `data.access.scopes`) with the request context; the answer is a list of JSON-patch-like
//! commands, `com.okta.identity.patch` / `com.okta.access.patch`, each a list of `add`,
//! `replace` or `remove` operations on `/claims/<key>`. `{"error":{"errorSummary":..}}` fails the
//! token request; any non-200 status makes Okta mint the tokens unchanged (it fails open), so
//! every rule outcome, including a script error, is answered with 200.
//!
//! Mapping (documented in the README, "Use it from your token server"):
//! - `user`: `user_id` = `data.context.user.id`; `email` (profile `email`, else `login` when it
//!   looks like one), `given_name`/`family_name` from `firstName`/`lastName`, `name`, `nickname`
//!   and `preferred_username` = `login`, `locale`, `zoneinfo` = `timeZone`; the raw Okta profile
//!   as `user.profile`; empty `app_metadata`/`user_metadata`.
//! - `context`: `clientID`/`clientName` from `data.context.protocol.client`, `protocol` from the
//!   request's `grant_type` (no grant type: `oidc-basic-profile`), `request.query` = the OAuth
//!   request parameters (`data.context.protocol.request`, credentials removed), `request.ip`,
//!   `sessionID`, `authentication.methods` from the session's `amr`, `grantedScopes` = the keys
//!   of `data.access.scopes`, `grantedAudience` from the access token's `aud`.
//! - `context.accessToken` / `context.idToken` start with the existing claims a rule could set
//!   itself (namespaced, plus OIDC profile claims on the ID token); a new key becomes `add`, a
//!   changed one `replace`, a removed one (set to `()`) `remove`. Okta's own claims are never
//!   touched. Claim keys are JSON-pointer escaped (`~` → `~0`, `/` → `~1`).
//! - Okta refuses changes to `scp`: a scope rewrite is logged as a warning and not sent.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    log_rule_error, read_json, run_rules, split_claims, warn_dropped, warn_scope_ignored,
    without_secrets, HookError, HookState,
};
use crate::claims::TokenKind;
use crate::model::Protocol;
use crate::rules::RuleError;

/// The event type of Okta's token inline hook.
pub const EVENT_TYPE: &str = "com.okta.oauth2.tokens.transform";

/// The body Okta posts (fields claimrules reads; others are ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenHookEvent {
    /// Must be [`EVENT_TYPE`].
    pub event_type: String,
    /// The event's id (for the log).
    #[serde(default)]
    pub event_id: Option<String>,
    /// The payload.
    pub data: EventData,
}

/// `data` of the event.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventData {
    /// Request, protocol, session, user and policy.
    #[serde(default)]
    pub context: Value,
    /// The ID token Okta is minting, when one is requested.
    #[serde(default)]
    pub identity: Option<TokenPart>,
    /// The access token Okta is minting, when one is requested.
    #[serde(default)]
    pub access: Option<TokenPart>,
}

/// `data.identity` / `data.access`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenPart {
    /// The token's claims.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// Granted scopes (access token only), keyed by scope name.
    #[serde(default)]
    pub scopes: Map<String, Value>,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Maps Okta's event to the rules' `user` and `context`; also returns the editable claims of
/// the ID and access tokens (prefilled into `context.idToken` / `context.accessToken`).
pub fn map_event(
    ev: &TokenHookEvent,
    reserved: &[String],
) -> (Value, Value, Map<String, Value>, Map<String, Value>) {
    let ctx = &ev.data.context;
    let profile = ctx
        .pointer("/user/profile")
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let login = str_at(&profile, "/login");
    let mut user = Map::new();
    user.insert(
        "user_id".into(),
        json!(str_at(ctx, "/user/id").unwrap_or("")),
    );
    let email = str_at(&profile, "/email").or(login.filter(|l| l.contains('@')));
    let given = str_at(&profile, "/firstName");
    let family = str_at(&profile, "/lastName");
    let name = match (given, family) {
        (Some(g), Some(f)) => Some(format!("{g} {f}")),
        (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => None,
    };
    for (key, value) in [
        ("email", email.map(str::to_owned)),
        ("given_name", given.map(str::to_owned)),
        ("family_name", family.map(str::to_owned)),
        ("name", name),
        ("nickname", login.map(str::to_owned)),
        ("preferred_username", login.map(str::to_owned)),
        ("locale", str_at(&profile, "/locale").map(str::to_owned)),
        ("zoneinfo", str_at(&profile, "/timeZone").map(str::to_owned)),
    ] {
        if let Some(v) = value {
            user.insert(key.into(), json!(v));
        }
    }
    user.insert("profile".into(), profile);
    user.insert("app_metadata".into(), json!({}));
    user.insert("user_metadata".into(), json!({}));

    let empty = Map::new();
    let id_claims = ev.data.identity.as_ref().map_or(&empty, |t| &t.claims);
    let access_claims = ev.data.access.as_ref().map_or(&empty, |t| &t.claims);
    let (id_editable, _) = split_claims(TokenKind::IdToken, id_claims, reserved);
    let (access_editable, _) = split_claims(TokenKind::AccessToken, access_claims, reserved);

    let query = ctx
        .pointer("/protocol/request")
        .and_then(Value::as_object)
        .cloned()
        .map(without_secrets)
        .unwrap_or_default();
    let grant = query
        .get("grant_type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let granted_scopes: Vec<&String> = ev
        .data
        .access
        .as_ref()
        .map(|a| a.scopes.keys().collect())
        .unwrap_or_default();
    let audience = match access_claims.get("aud") {
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let methods: Vec<Value> = ctx
        .pointer("/session/amr")
        .and_then(Value::as_array)
        .map(|amr| amr.iter().map(|m| json!({"name": m})).collect())
        .unwrap_or_default();
    let mut context = json!({
        "clientID": str_at(ctx, "/protocol/client/id").unwrap_or(""),
        "clientName": str_at(ctx, "/protocol/client/name").unwrap_or(""),
        "clientMetadata": {},
        "protocol": Protocol::for_grant_type(&grant).as_str(),
        "grantedScopes": granted_scopes,
        "grantedAudience": audience,
        "request": {
            "query": query,
            "body": {},
            "ip": str_at(ctx, "/request/ipAddress").unwrap_or(""),
        },
        "authentication": {"methods": methods},
        "accessToken": access_editable,
        "idToken": id_editable,
    });
    if let Some(sid) = str_at(ctx, "/session/id") {
        context["sessionID"] = json!(sid);
    }
    (Value::Object(user), context, id_editable, access_editable)
}

/// Escapes a claim key for a JSON pointer (RFC 6901): `~` → `~0`, then `/` → `~1`.
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The patch operations that turn `before` into `after`: `add`/`replace` in key order, then
/// `remove` in key order.
pub fn patch_ops(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<Value> {
    let mut ops = Vec::new();
    for (k, v) in after {
        let path = format!("/claims/{}", pointer_escape(k));
        match before.get(k) {
            None => ops.push(json!({"op": "add", "path": path, "value": v})),
            Some(old) if old != v => ops.push(json!({"op": "replace", "path": path, "value": v})),
            Some(_) => {}
        }
    }
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        ops.push(json!({"op": "remove", "path": format!("/claims/{}", pointer_escape(k))}));
    }
    ops
}

/// The `jti` Okta already assigned to a token, so the log ties it to a rule-set version.
fn jti(part: &Option<TokenPart>) -> &str {
    part.as_ref()
        .and_then(|p| p.claims.get("jti"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn error_reply(summary: &str) -> Response {
    (
        StatusCode::OK,
        Json(json!({"error": {"errorSummary": summary}})),
    )
        .into_response()
}

/// `POST /hooks/okta/token`.
pub(super) async fn handle(State(st): State<HookState>, req: Request) -> Response {
    let authorization = axum::http::header::AUTHORIZATION;
    let ev: TokenHookEvent = match read_json(
        req,
        Some(&authorization),
        st.cfg.okta_authorization.as_deref(),
        st.cfg.allow_unauthenticated_loopback,
    )
    .await
    {
        Ok(ev) => ev,
        Err(e) => return e.into_response(),
    };
    if ev.event_type != EVENT_TYPE {
        return HookError::Malformed(format!(
            "eventType is {:?}, expected {EVENT_TYPE:?}",
            ev.event_type
        ))
        .into_response();
    }
    let reserved = st.reserved_hosts();
    let (user, context, id_before, access_before) = map_event(&ev, &reserved);
    let user_id = user["user_id"].as_str().unwrap_or("").to_owned();
    let (version, result) = match run_rules(&st.rules, user, context).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(hook = "okta", error = %e, "cannot run the rules");
            // Okta fails open on non-200 answers: refuse the token explicitly instead.
            return error_reply("the rules failed");
        }
    };
    let out = match result {
        Ok(out) => out,
        Err(err) => {
            log_rule_error("okta", version, &err);
            return match &err {
                RuleError::Denied { message, .. } => error_reply(message),
                // Script internals stay in the log.
                _ => error_reply("the rules failed"),
            };
        }
    };
    warn_scope_ignored("okta", version, &out.scope);
    warn_dropped("okta", version, &out);
    tracing::info!(
        hook = "okta",
        rules_version = version,
        user_id = %user_id,
        event_id = ev.event_id.as_deref().unwrap_or(""),
        access_jti = jti(&ev.data.access),
        id_jti = jti(&ev.data.identity),
        "rules ran for an Okta token"
    );
    let mut commands = Vec::new();
    if ev.data.identity.is_some() {
        let ops = patch_ops(&id_before, &out.id_token);
        if !ops.is_empty() {
            commands.push(json!({"type": "com.okta.identity.patch", "value": ops}));
        }
    }
    if ev.data.access.is_some() {
        let ops = patch_ops(&access_before, &out.access_token);
        if !ops.is_empty() {
            commands.push(json!({"type": "com.okta.access.patch", "value": ops}));
        }
    }
    (StatusCode::OK, Json(json!({"commands": commands}))).into_response()
}

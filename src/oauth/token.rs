//! The token endpoint's wire types (RFC 6749 §3.2, §4.1.3, §5, §6): the request parameters
//! ([`TokenParams`]), HTTP Basic client credentials ([`basic_credentials`]), the successful
//! answer ([`TokenResponse`]) and the error answer ([`TokenError`]).

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::Value;

use super::ErrorCode;

/// An RFC 6749 §5.2 error of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
#[non_exhaustive]
pub struct TokenError {
    /// `error`.
    pub code: ErrorCode,
    /// `error_description`.
    pub description: String,
    /// The client authenticated with HTTP Basic (a 401 then carries `WWW-Authenticate`).
    pub basic: bool,
}

impl TokenError {
    /// An error with this code and description.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> TokenError {
        TokenError {
            code,
            description: description.into(),
            basic: false,
        }
    }
    /// `invalid_request`.
    pub fn invalid_request(d: impl Into<String>) -> TokenError {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    /// `invalid_client` (401).
    pub fn invalid_client(d: impl Into<String>) -> TokenError {
        Self::new(ErrorCode::InvalidClient, d)
    }
    /// `invalid_grant`.
    pub fn invalid_grant(d: impl Into<String>) -> TokenError {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    /// `unauthorized_client`.
    pub fn unauthorized_client(d: impl Into<String>) -> TokenError {
        Self::new(ErrorCode::UnauthorizedClient, d)
    }
    /// `unsupported_grant_type`.
    pub fn unsupported_grant_type(d: impl Into<String>) -> TokenError {
        Self::new(ErrorCode::UnsupportedGrantType, d)
    }
    /// `invalid_scope`.
    pub fn invalid_scope(d: impl Into<String>) -> TokenError {
        Self::new(ErrorCode::InvalidScope, d)
    }
    /// `server_error` (500), with a generic description.
    pub fn server_error() -> TokenError {
        Self::new(
            ErrorCode::ServerError,
            "the server could not complete the request",
        )
    }
    /// `temporarily_unavailable` (503): storage is unreachable.
    pub fn unavailable() -> TokenError {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "the server cannot store state right now; try again",
        )
    }
    /// The same error, marked as answering a client that used HTTP Basic.
    pub fn via_basic(mut self, basic: bool) -> TokenError {
        self.basic = basic;
        self
    }

    /// The HTTP status ([`ErrorCode::status`]).
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The RFC 6749 §5.2 JSON body: `{"error": …, "error_description": …}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"error": self.code, "error_description": self.description})
    }

    /// True when the answer must carry `WWW-Authenticate: Basic` (RFC 6749 §5.2: a 401 to a
    /// client that tried the `Authorization` header).
    pub fn challenges_basic(&self) -> bool {
        self.code == ErrorCode::InvalidClient && self.basic
    }
}

/// A successful token answer (RFC 6749 §5.1; OpenID Connect Core §3.1.3.3 for `id_token`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct TokenResponse {
    /// `access_token`.
    pub access_token: String,
    /// `token_type`: always `Bearer`.
    pub token_type: String,
    /// `expires_in`: the access token's lifetime, seconds.
    pub expires_in: u64,
    /// `id_token`, when `openid` was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// `refresh_token`, when one was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// `scope`, space-separated: sent only when it differs from the requested one (§5.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl TokenResponse {
    /// A `Bearer` answer with this access token and lifetime.
    pub fn bearer(access_token: String, expires_in: u64) -> TokenResponse {
        TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in,
            id_token: None,
            refresh_token: None,
            scope: None,
        }
    }
}

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
    /// A parameter's value; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every parameter, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Parses a body given its `Content-Type` (absent counts as a form): a form
    /// (`application/x-www-form-urlencoded`, UTF-8) or a JSON object of strings; a repeated
    /// parameter is `invalid_request` in both.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<TokenParams, TokenError> {
        let ctype = content_type.unwrap_or("").to_ascii_lowercase();
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn params_refuse_repeats_in_forms_and_json_alike() {
        let form = Some("application/x-www-form-urlencoded");
        let json = Some("application/json; charset=utf-8");
        let p = TokenParams::parse(form, b"grant_type=refresh_token&scope=").unwrap();
        assert_eq!(p.get("grant_type"), Some("refresh_token"));
        assert_eq!(p.get("scope"), None, "an empty value is absent");
        let p = TokenParams::parse(None, b"a=1").unwrap();
        assert_eq!(p.iter().collect::<Vec<_>>(), [("a", "1")]);
        let p = TokenParams::parse(json, br#"{"code":"x","nonce":null}"#).unwrap();
        assert_eq!((p.get("code"), p.get("nonce")), (Some("x"), None));
        for (ctype, body) in [
            (form, &b"a=1&a=2"[..]),
            (json, br#"{"a":"1","a":"2"}"#),
            (json, br#"{"a":1}"#),
            (json, b"[]"),
            (json, b"{"),
            (form, b"a=\xff"),
            (Some("text/plain"), b"a=1"),
        ] {
            let e = TokenParams::parse(ctype, body).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{e}");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn errors_and_answers_have_the_rfc_6749_shape() {
        let e = TokenError::invalid_client("no").via_basic(true);
        assert_eq!((e.status(), e.challenges_basic()), (401, true));
        assert!(!TokenError::invalid_client("no").challenges_basic());
        assert_eq!(
            TokenError::unavailable().to_json()["error"],
            "temporarily_unavailable"
        );
        assert_eq!(TokenError::server_error().status(), 500);
        let mut r = TokenResponse::bearer("at".into(), 60);
        r.scope = Some("read".into());
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"access_token": "at", "token_type": "Bearer", "expires_in": 60, "scope": "read"})
        );
    }
}

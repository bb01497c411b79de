//! A call as a rule gives it (`http_get`, `http_post`, `http_request`): URL, method, options,
//! headers and body, checked and ready to send.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use rhai::Dynamic;

/// The option keys `options` maps accept.
const OPTION_KEYS: &str = "method, url, headers, body, json, form, timeout_ms";

/// One call, checked and ready to send.
pub(super) struct Call {
    pub(super) name: &'static str,
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) host: String,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<Vec<u8>>,
    pub(super) timeout: Option<Duration>,
}

/// A request body given by a rule.
enum Body {
    Text(String),
    Json(Dynamic),
    Form(rhai::Map),
}

fn text_of(value: &Dynamic) -> Option<String> {
    if value.is_string() || value.is_int() || value.is_float() || value.is_bool() {
        Some(value.to_string())
    } else {
        None
    }
}

/// Parses and checks a call's URL, method, options and body. `fixed` is true for `http_get`
/// and `http_post`, whose method and URL come from the call itself.
pub(super) fn prepare(
    name: &'static str,
    method: Option<Method>,
    url: Option<&Dynamic>,
    body: Option<&Dynamic>,
    options: Option<&Dynamic>,
) -> Result<Call, String> {
    let options = match options {
        None => rhai::Map::new(),
        Some(o) => o
            .read_lock::<rhai::Map>()
            .map(|m| m.clone())
            .ok_or_else(|| format!("{name}: options must be a map, got {}", o.type_name()))?,
    };
    let url_value = match (url, options.get("url")) {
        (Some(u), None) => u.clone(),
        (None, Some(u)) => u.clone(),
        (Some(_), Some(_)) => {
            return Err(format!(
                "{name}: the url is the first argument, not an option (http_request takes it in options)"
            ))
        }
        (None, None) => return Err(format!("{name}: options need a url")),
    };
    let url_text = url_value
        .clone()
        .into_string()
        .map_err(|t| format!("{name}: the url must be a string, got {t}"))?;
    // The parse error never echoes the URL (its query may hold secrets).
    let url = Url::parse(&url_text).map_err(|e| format!("{name}: invalid URL ({e})"))?;
    let host = url.host_str().unwrap_or("").to_owned();
    let fail = |what: String| format!("{name}: {host}: {what}");

    let fixed_method = method.is_some();
    let mut method = method.unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    let mut given: Option<Body> = body
        .map(|b| {
            if let Ok(text) = b.clone().into_string() {
                Ok(Body::Text(text))
            } else if b.is_map() || b.is_array() {
                Ok(Body::Json(b.clone()))
            } else {
                Err(fail(format!(
                    "the body must be a string, a map or an array, got {}",
                    b.type_name()
                )))
            }
        })
        .transpose()?;
    let from_call = given.is_some();
    let mut timeout = None;

    for (key, value) in &options {
        let mut set_body = |b: Body| -> Result<(), String> {
            if from_call {
                return Err(fail(format!(
                    "option {key:?}: the body is the second argument of {name}"
                )));
            }
            if given.is_some() {
                return Err(fail("give only one of body, json and form".into()));
            }
            given = Some(b);
            Ok(())
        };
        match key.as_str() {
            "url" => {}
            "method" => {
                if fixed_method {
                    return Err(fail(format!(
                        "option \"method\": {name} sets the method (use http_request)"
                    )));
                }
                let text = value
                    .clone()
                    .into_string()
                    .map_err(|t| fail(format!("option \"method\" must be a string, got {t}")))?;
                method = match text.to_ascii_uppercase().as_str() {
                    "GET" => Method::GET,
                    "HEAD" => Method::HEAD,
                    "POST" => Method::POST,
                    "PUT" => Method::PUT,
                    "PATCH" => Method::PATCH,
                    "DELETE" => Method::DELETE,
                    "OPTIONS" => Method::OPTIONS,
                    _ => {
                        return Err(fail(format!(
                            "unsupported method {text:?} (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"
                        )))
                    }
                };
            }
            "headers" => {
                let map = value.read_lock::<rhai::Map>().ok_or_else(|| {
                    fail(format!(
                        "option \"headers\" must be a map, got {}",
                        value.type_name()
                    ))
                })?;
                for (k, v) in map.iter() {
                    let header = HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| fail(format!("invalid header name {k:?}")))?;
                    if matches!(
                        header.as_str(),
                        "host"
                            | "content-length"
                            | "transfer-encoding"
                            | "connection"
                            | "keep-alive"
                            | "upgrade"
                            | "te"
                            | "trailer"
                    ) {
                        return Err(fail(format!("header {k:?} is set by the client")));
                    }
                    let text = text_of(v).ok_or_else(|| {
                        fail(format!(
                            "header {k:?} must be a string, got {}",
                            v.type_name()
                        ))
                    })?;
                    let header_value = HeaderValue::from_str(&text)
                        .map_err(|_| fail(format!("header {k:?} has an invalid value")))?;
                    headers.append(header, header_value);
                }
            }
            "body" => {
                let text = value
                    .clone()
                    .into_string()
                    .map_err(|t| fail(format!("option \"body\" must be a string, got {t}")))?;
                set_body(Body::Text(text))?;
            }
            "json" => set_body(Body::Json(value.clone()))?,
            "form" => {
                let map = value
                    .read_lock::<rhai::Map>()
                    .map(|m| m.clone())
                    .ok_or_else(|| {
                        fail(format!(
                            "option \"form\" must be a map, got {}",
                            value.type_name()
                        ))
                    })?;
                set_body(Body::Form(map))?;
            }
            "timeout_ms" => {
                let ms = value
                    .as_int()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .and_then(|ms| u64::try_from(ms).ok())
                    .ok_or_else(|| {
                        fail("option \"timeout_ms\" must be a positive integer".into())
                    })?;
                timeout = Some(Duration::from_millis(ms));
            }
            other => {
                return Err(fail(format!(
                    "unknown option {other:?} (known: {OPTION_KEYS})"
                )))
            }
        }
    }

    let mut content_type = None;
    let body = match given {
        None => None,
        Some(Body::Text(t)) => Some(t.into_bytes()),
        Some(Body::Json(v)) => {
            let json: serde_json::Value = rhai::serde::from_dynamic(&v)
                .map_err(|e| fail(format!("the json body cannot be converted: {e}")))?;
            content_type = Some("application/json");
            Some(serde_json::to_vec(&json).map_err(|e| fail(format!("json body: {e}")))?)
        }
        Some(Body::Form(map)) => {
            let mut pairs = Vec::with_capacity(map.len());
            for (k, v) in &map {
                let text = text_of(v).ok_or_else(|| {
                    fail(format!(
                        "form field {k:?} must be a string, got {}",
                        v.type_name()
                    ))
                })?;
                pairs.push((k.to_string(), text));
            }
            content_type = Some("application/x-www-form-urlencoded");
            Some(
                serde_urlencoded::to_string(&pairs)
                    .map_err(|e| fail(format!("form body: {e}")))?
                    .into_bytes(),
            )
        }
    };
    if let Some(ct) = content_type {
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
    }
    Ok(Call {
        name,
        method,
        url,
        host,
        headers,
        body,
        timeout,
    })
}

//! Who may use the playground: every request must present the random token of the printed URL
//! (`?token=` or the `X-Playground-Token` header), compared in constant time, and name a
//! loopback host in `Host` (a DNS-rebinding page sends its own host name). Anything else is
//! answered 403 before any handler reads or writes a file.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::server::loopback_host;

/// The request header the page sends the token in.
pub const TOKEN_HEADER: &str = "x-playground-token";

/// Bytes of randomness in a token (256 bits, base64url: 43 characters).
const TOKEN_BYTES: usize = 32;

/// The secret of one playground run.
#[derive(Clone)]
pub struct AccessToken(String);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

impl AccessToken {
    /// A new random token.
    pub fn generate() -> AccessToken {
        AccessToken(crate::crypto::random_token(TOKEN_BYTES))
    }

    /// A token of the caller's choosing (tests).
    pub fn from_string(token: String) -> AccessToken {
        AccessToken(token)
    }

    /// The token's text (for the printed URL).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        crate::crypto::secret_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

/// The token a request presents: the header, else the `token` query parameter.
fn presented(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(TOKEN_HEADER) {
        return v.to_str().ok().map(str::to_owned);
    }
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// The 403 answer: no detail beyond what is missing.
fn forbidden(why: &'static str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        why,
    )
        .into_response()
}

/// Middleware: the token and a loopback `Host`, else 403; security headers on every answer.
pub async fn require_token(State(token): State<AccessToken>, req: Request, next: Next) -> Response {
    let mut res = if !loopback_host(req.headers()) {
        forbidden("forbidden: the playground answers only on a loopback host name\n")
    } else if !presented(&req).is_some_and(|t| token.matches(&t)) {
        forbidden("forbidden: open the URL claimrules playground printed (it carries the token)\n")
    } else if super::paths::has_dot_segment(req.uri().path()) {
        (StatusCode::BAD_REQUEST, "paths with `..` are refused\n").into_response()
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    for (name, value) in [
        // The page's own files only; no framing, nothing sent to other origins.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
        // The token is in the page's URL: never pass it on in a Referer.
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let t = AccessToken::from_string("abc".into());
        assert!(t.matches("abc"));
        assert!(!t.matches("ab"));
        assert!(!t.matches("abcd"));
        assert!(!t.matches(""));
        assert_eq!(AccessToken::generate().as_str().len(), 43);
    }
}

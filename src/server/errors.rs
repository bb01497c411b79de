//! RFC 6749 error answers: JSON for the token endpoint (§5.2), redirects for the authorization
//! endpoint (§4.1.2.1), and an HTML page when the redirect URI cannot be trusted.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use super::pages;

/// An RFC 6749 §5.2 error of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct TokenError {
    /// `error`.
    pub code: &'static str,
    /// `error_description`.
    pub description: String,
    /// The client authenticated with HTTP Basic (a 401 then carries `WWW-Authenticate`).
    pub basic: bool,
}

impl TokenError {
    fn new(code: &'static str, description: impl Into<String>) -> TokenError {
        TokenError {
            code,
            description: description.into(),
            basic: false,
        }
    }
    /// `invalid_request`.
    pub fn invalid_request(d: impl Into<String>) -> TokenError {
        Self::new("invalid_request", d)
    }
    /// `invalid_client` (401).
    pub fn invalid_client(d: impl Into<String>) -> TokenError {
        Self::new("invalid_client", d)
    }
    /// `invalid_grant`.
    pub fn invalid_grant(d: impl Into<String>) -> TokenError {
        Self::new("invalid_grant", d)
    }
    /// `unauthorized_client`.
    pub fn unauthorized_client(d: impl Into<String>) -> TokenError {
        Self::new("unauthorized_client", d)
    }
    /// `unsupported_grant_type`.
    pub fn unsupported_grant_type(d: impl Into<String>) -> TokenError {
        Self::new("unsupported_grant_type", d)
    }
    /// `invalid_scope`.
    pub fn invalid_scope(d: impl Into<String>) -> TokenError {
        Self::new("invalid_scope", d)
    }
    /// `server_error` (500), with a generic description.
    pub fn server_error() -> TokenError {
        Self::new("server_error", "the server could not complete the request")
    }
    /// `temporarily_unavailable` (503): storage is unreachable.
    pub fn unavailable() -> TokenError {
        Self::new(
            "temporarily_unavailable",
            "the server cannot store state right now; try again",
        )
    }

    fn status(&self) -> StatusCode {
        match self.code {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<crate::issuer::OAuthError> for TokenError {
    /// The token endpoint's answer to a failed issuance ([`crate::issuer::oauth`]).
    fn from(e: crate::issuer::OAuthError) -> TokenError {
        TokenError::new(e.error.as_str(), e.description)
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        metrics::counter!("claimrules_token_errors_total", "error" => self.code).increment(1);
        let mut res = (
            self.status(),
            axum::Json(json!({"error": self.code, "error_description": self.description})),
        )
            .into_response();
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.code == "invalid_client" && self.basic {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"claimrules\""),
            );
        }
        res
    }
}

/// An error of the authorization endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Unknown client or untrusted redirect URI: shown as a page, never redirected.
    Page {
        /// Short title.
        title: String,
        /// Explanation.
        detail: String,
    },
    /// Redirected to the client's validated redirect URI.
    Redirect {
        /// The validated redirect URI.
        redirect_uri: String,
        /// `error`.
        code: &'static str,
        /// `error_description`.
        description: String,
        /// The original `state`.
        state: Option<String>,
        /// The issuer (RFC 9207 `iss`).
        iss: String,
    },
}

impl AuthorizeError {
    /// An error page.
    pub fn page(title: &str, detail: impl Into<String>) -> AuthorizeError {
        AuthorizeError::Page {
            title: title.into(),
            detail: detail.into(),
        }
    }
}

/// Appends query parameters to a redirect URI that may already carry a query.
pub fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = redirect_uri.to_owned();
    let mut sep = if out.contains('?') { '&' } else { '?' };
    if out.ends_with('?') || out.ends_with('&') {
        sep = '\0';
    }
    let encoded = serde_urlencoded::to_string(params).unwrap_or_default();
    if sep != '\0' {
        out.push(sep);
    }
    out.push_str(&encoded);
    out
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        match self {
            AuthorizeError::Page { title, detail } => {
                pages::html(StatusCode::BAD_REQUEST, pages::error_page(&title, &detail))
            }
            AuthorizeError::Redirect {
                redirect_uri,
                code,
                description,
                state,
                iss,
            } => {
                metrics::counter!("claimrules_authorize_errors_total", "error" => code)
                    .increment(1);
                let mut params = vec![("error", code), ("error_description", description.as_str())];
                if let Some(s) = state.as_deref() {
                    params.push(("state", s));
                }
                params.push(("iss", iss.as_str()));
                Redirect::to(&with_params(&redirect_uri, &params)).into_response()
            }
        }
    }
}

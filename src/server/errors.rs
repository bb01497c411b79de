//! RFC 6749 error answers as HTTP responses: JSON for the token endpoint (§5.2), redirects for
//! the authorization endpoint (§4.1.2.1), and an HTML page when the redirect URI cannot be
//! trusted. The error types themselves are wire types ([`crate::oauth`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::pages;
pub use crate::oauth::authorize::with_params;
pub use crate::oauth::{AuthorizeError, TokenError};

/// `Cache-Control: no-store` and `Pragma: no-cache`, which every token endpoint answer carries
/// (RFC 6749 §5.1).
pub(crate) fn no_store(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        metrics::counter!("claimrules_token_errors_total", "error" => self.code.as_str())
            .increment(1);
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut res = (status, axum::Json(self.to_json())).into_response();
        no_store(&mut res);
        if self.challenges_basic() {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"claimrules\""),
            );
        }
        res
    }
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        match &self {
            AuthorizeError::Page { title, detail } => {
                pages::html(StatusCode::BAD_REQUEST, pages::error_page(title, detail))
            }
            AuthorizeError::Redirect { code, .. } => {
                metrics::counter!("claimrules_authorize_errors_total", "error" => code.as_str())
                    .increment(1);
                Redirect::to(&self.location().unwrap_or_default()).into_response()
            }
        }
    }
}

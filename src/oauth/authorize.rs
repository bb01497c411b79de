//! The authorization endpoint's wire types (RFC 6749 §4.1.2): the code answer
//! ([`CodeResponse`]), the error answer ([`AuthorizeError`]), and the query building both share
//! ([`with_params`]).

use super::ErrorCode;

/// An error of the authorization endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeError {
    /// Unknown client or untrusted redirect URI: shown as a page, never redirected (RFC 6749
    /// §4.1.2.1, first paragraph).
    #[error("{title}: {detail}")]
    Page {
        /// Short title.
        title: String,
        /// Explanation.
        detail: String,
    },
    /// Redirected to the client's validated redirect URI.
    #[error("{code}: {description}")]
    Redirect {
        /// The validated redirect URI.
        redirect_uri: String,
        /// `error`.
        code: ErrorCode,
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

    /// The `Location` of a [`AuthorizeError::Redirect`]: the redirect URI with `error`,
    /// `error_description`, `state` and `iss`; `None` for a page.
    pub fn location(&self) -> Option<String> {
        let AuthorizeError::Redirect {
            redirect_uri,
            code,
            description,
            state,
            iss,
        } = self
        else {
            return None;
        };
        let answer = [
            ("error", code.as_str()),
            ("error_description", description.as_str()),
        ];
        Some(answer_location(
            redirect_uri,
            &answer,
            state.as_deref(),
            iss,
        ))
    }
}

/// A successful authorization answer (RFC 6749 §4.1.2, with RFC 9207 `iss`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CodeResponse {
    /// `code`.
    pub code: String,
    /// The request's `state`, returned unchanged.
    pub state: Option<String>,
    /// `iss`: the issuer.
    pub iss: String,
}

impl CodeResponse {
    /// An answer carrying this code.
    pub fn new(code: String, state: Option<String>, iss: String) -> CodeResponse {
        CodeResponse { code, state, iss }
    }

    /// The `Location`: the redirect URI with `code`, `state` and `iss`.
    pub fn location(&self, redirect_uri: &str) -> String {
        let answer = [("code", self.code.as_str())];
        answer_location(redirect_uri, &answer, self.state.as_deref(), &self.iss)
    }
}

/// The `Location` of an authorization answer: its parameters, then `state` when the request had
/// one and `iss` (RFC 9207 §2), on the redirect URI.
fn answer_location(
    redirect_uri: &str,
    answer: &[(&str, &str)],
    state: Option<&str>,
    iss: &str,
) -> String {
    let mut params = answer.to_vec();
    params.extend(state.map(|s| ("state", s)));
    params.push(("iss", iss));
    with_params(redirect_uri, &params)
}

/// Appends form-encoded query parameters to a redirect URI that may already carry a query
/// (RFC 6749 §3.1.2: the registered query is kept).
pub fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = redirect_uri.to_owned();
    if !(out.ends_with('?') || out.ends_with('&')) {
        out.push(if out.contains('?') { '&' } else { '?' });
    }
    out.push_str(&serde_urlencoded::to_string(params).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_the_registered_query() {
        let p = [("code", "a b"), ("state", "x&y")];
        assert_eq!(
            with_params("https://a/cb", &p),
            "https://a/cb?code=a+b&state=x%26y"
        );
        assert_eq!(
            with_params("https://a/cb?k=1", &p[..1]),
            "https://a/cb?k=1&code=a+b"
        );
        assert_eq!(
            with_params("https://a/cb?", &p[..1]),
            "https://a/cb?code=a+b"
        );
        assert_eq!(
            with_params("https://a/cb?k=1&", &p[..1]),
            "https://a/cb?k=1&code=a+b"
        );
    }

    #[test]
    fn answers_carry_state_and_iss() {
        let ok = CodeResponse::new("c".into(), Some("s".into()), "https://i/".into());
        assert_eq!(
            ok.location("https://a/cb"),
            "https://a/cb?code=c&state=s&iss=https%3A%2F%2Fi%2F"
        );
        let err = AuthorizeError::Redirect {
            redirect_uri: "https://a/cb".into(),
            code: ErrorCode::AccessDenied,
            description: "no".into(),
            state: None,
            iss: "https://i/".into(),
        };
        assert_eq!(
            err.location().as_deref(),
            Some("https://a/cb?error=access_denied&error_description=no&iss=https%3A%2F%2Fi%2F")
        );
        assert_eq!(err.to_string(), "access_denied: no");
        assert_eq!(AuthorizeError::page("T", "d").location(), None);
    }
}

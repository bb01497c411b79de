//! Why a call was refused or failed, described without its URL (the query may hold secrets),
//! and the helper error a rule gets for it.

use std::fmt;

use rhai::{EvalAltResult, NativeCallContext};

/// Why a call was refused or failed, for the host it was about (a redirect target may differ
/// from the called host). Never carries a query string or a header value.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    pub(super) host: String,
    pub(super) detail: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.host, self.detail)
    }
}

impl std::error::Error for Refusal {}

/// Describes a failed request without its URL: a refusal of the resolver or the redirect
/// policy when there is one, else the causes' texts.
pub(super) fn describe(host: &str, err: &reqwest::Error) -> Refusal {
    let own = |detail: String| Refusal {
        host: host.to_owned(),
        detail,
    };
    let mut texts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(known) = known_cause(e) {
            return match known {
                Known::Refusal(r) => r.clone(),
                Known::Detail(d) => own(d),
            };
        }
        let text = e.to_string();
        if !texts.iter().any(|t| t == &text) {
            texts.push(text);
        }
        source = e.source();
    }
    if texts.is_empty() {
        texts.push(kind_text(err));
    }
    own(format!("request failed: {}", texts.join(": ")))
}

enum Known<'a> {
    Refusal(&'a Refusal),
    Detail(String),
}

/// A cause worth naming on its own: our refusal, a TLS failure, a refused connection. Looks
/// inside `io::Error`s, whose `source()` skips the error they wrap.
fn known_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<Known<'a>> {
    if let Some(r) = e.downcast_ref::<Refusal>() {
        return Some(Known::Refusal(r));
    }
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(Known::Detail(format!("TLS: {tls}")));
    }
    let io = e.downcast_ref::<std::io::Error>()?;
    if io.kind() == std::io::ErrorKind::ConnectionRefused {
        return Some(Known::Detail("connection refused".into()));
    }
    let inner: &(dyn std::error::Error + 'static) = io.get_ref()?;
    known_cause(inner)
}

/// What kind of failure `err` is, without the URL its own text would print.
fn kind_text(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_redirect() {
        "redirect failed"
    } else if err.is_body() || err.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}

/// The helper error for a refusal: about the called host, or about a redirect target.
pub(super) fn refusal_error(
    ctx: &NativeCallContext,
    name: &str,
    host: &str,
    r: Refusal,
) -> Box<EvalAltResult> {
    let msg = if r.host == host {
        format!("{name}: {host}: {}", r.detail)
    } else {
        format!("{name}: {host}: redirected to {}: {}", r.host, r.detail)
    };
    crate::rules::engine::helper_error(ctx.call_position(), msg)
}

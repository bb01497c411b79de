//! The HTML pages: login, consent and error. Plain forms that work without JavaScript, served
//! with headers that forbid framing and inline scripts.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#f4f5f7;\
color:#1d2330;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}\
main{background:#fff;border-radius:10px;box-shadow:0 2px 12px rgba(0,0,0,.08);padding:2rem 2.25rem;\
width:100%;max-width:24rem}h1{font-size:1.35rem;margin:0 0 .25rem}p.sub{color:#5b6475;margin:0 0 1.25rem}\
label{display:block;font-weight:600;font-size:.9rem;margin:.9rem 0 .3rem}\
input[type=email],input[type=text],input[type=password]{width:100%;box-sizing:border-box;\
padding:.6rem .7rem;border:1px solid #c5cad3;border-radius:6px;font-size:1rem}\
button{margin-top:1.25rem;width:100%;padding:.7rem;border:0;border-radius:6px;font-size:1rem;\
font-weight:600;cursor:pointer;background:#3056d3;color:#fff}button.secondary{background:#e6e8ec;color:#1d2330}\
.row{display:flex;gap:.75rem}.row button{flex:1}.error{background:#fdecec;color:#9b1c1c;\
border-radius:6px;padding:.6rem .8rem;margin-bottom:.5rem}ul.scopes{padding-left:1.2rem}\
ul.scopes li{margin:.3rem 0}code{background:#f0f1f4;padding:.05rem .3rem;border-radius:4px}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title>\
<style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        escape(title)
    )
}

/// An HTML response with the security headers of every page.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// The path the server's pages live under: the issuer URL's path, `/` at the root and
/// `/auth/` when a host app nests the router under `/auth` (the issuer URL must then end with
/// that prefix). Form actions and local redirects are built on it, so they work nested too.
pub fn base_path(issuer_url: &str) -> String {
    let path = url::Url::parse(issuer_url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/".to_owned());
    if path.ends_with('/') {
        path
    } else {
        format!("{path}/")
    }
}

/// The login form, posting to `{base}login` ([`base_path`]). `authz` is the original
/// authorization request's query string.
pub fn login_page(
    base: &str,
    client_name: &str,
    authz: &str,
    csrf: &str,
    error: Option<&str>,
    login: &str,
) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    layout(
        "Log in",
        &format!(
            "<h1>Log in</h1><p class=\"sub\">to continue to <strong>{client}</strong></p>{error}\
<form method=\"post\" action=\"{base}login\">\
<input type=\"hidden\" name=\"authz\" value=\"{authz}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"username\">Email</label>\
<input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" value=\"{login}\" required autofocus>\
<label for=\"password\">Password</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Log in</button></form>",
            base = escape(base),
            client = escape(client_name),
            authz = escape(authz),
            csrf = escape(csrf),
            login = escape(login),
        ),
    )
}

/// The consent page: the API, the requested scopes, Allow / Deny; posts to `{base}consent`.
pub fn consent_page(
    base: &str,
    client_name: &str,
    user: &str,
    api_name: Option<&str>,
    scopes: &[String],
    authz: &str,
    csrf: &str,
) -> String {
    let items: String = scopes
        .iter()
        .map(|s| {
            format!(
                "<li><code>{}</code> {}</li>",
                escape(s),
                escape(describe_scope(s))
            )
        })
        .collect();
    let api = api_name
        .map(|a| format!(" and the API <strong>{}</strong>", escape(a)))
        .unwrap_or_default();
    layout(
        "Authorize access",
        &format!(
            "<h1>Authorize {client}</h1><p class=\"sub\">Hi {user}, <strong>{client}</strong> asks to \
access your account{api}:</p><ul class=\"scopes\">{items}</ul>\
<form method=\"post\" action=\"{base}consent\">\
<input type=\"hidden\" name=\"authz\" value=\"{authz}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<div class=\"row\"><button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button>\
<button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button></div></form>",
            base = escape(base),
            client = escape(client_name),
            user = escape(user),
            authz = escape(authz),
            csrf = escape(csrf),
        ),
    )
}

fn describe_scope(scope: &str) -> &'static str {
    match scope {
        "openid" => "— sign you in",
        "profile" => "— your name and profile",
        "email" => "— your email address",
        "offline_access" => "— stay signed in (refresh tokens)",
        _ => "",
    }
}

/// The logout confirmation: one button posting to `{base}logout` with the CSRF token.
pub fn logout_page(base: &str, csrf: &str) -> String {
    layout(
        "Log out",
        &format!(
            "<h1>Log out?</h1><p class=\"sub\">You will be logged out of every application that \
uses this login.</p><form method=\"post\" action=\"{base}logout\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\">Log out</button></form>",
            base = escape(base),
            csrf = escape(csrf),
        ),
    )
}

/// An error page (unknown client, untrusted redirect URI, throttled login).
pub fn error_page(title: &str, detail: &str) -> String {
    layout(
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\">{}</p>",
            escape(title),
            escape(detail)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_is_the_issuer_path_with_a_trailing_slash() {
        assert_eq!(base_path("http://127.0.0.1:3000/"), "/");
        assert_eq!(base_path("http://127.0.0.1:3000"), "/");
        assert_eq!(base_path("https://example.com/auth/"), "/auth/");
        assert_eq!(base_path("https://example.com/t/1"), "/t/1/");
        assert_eq!(base_path("not a url"), "/");
    }

    #[test]
    fn forms_post_under_the_base_path() {
        let login = login_page("/auth/", "App", "q=1", "c", None, "");
        assert!(login.contains(r#"action="/auth/login""#), "{login}");
        let consent = consent_page("/", "App", "u", None, &[], "q=1", "c");
        assert!(consent.contains(r#"action="/consent""#), "{consent}");
    }
}

//! Outbound HTTP from rules: `http_get`, `http_post`, `http_request`, configured by the
//! `[http]` table of `rules.toml`.
//!
//! Rules run synchronously (on a blocking thread in the server, on plain threads in the CLI),
//! so each call is handed to one process-wide tokio runtime and the rule's thread waits for the
//! answer on a channel. What a call may reach is decided here, not by the rule: https only
//! (plain http only for `http://` allow entries), hosts from the allow list only, no
//! loopback/private/link-local addresses unless `allow_private`, redirects re-checked hop by
//! hop, no cookie store, no proxies, bounded time, size and number of calls.

mod allow;
mod client;
mod config;
mod errors;
mod request;
mod resolver;
mod send;
mod wait;

use std::sync::Arc;

use reqwest::Method;
use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};

pub use client::HttpClient;
pub use config::{HttpConfig, DEFAULT_HTTP_BUDGET_MS};
use request::prepare;
use send::call;
pub use wait::{with_wait_slot, WaitSlot};

/// Registers `http_get(url)`, `http_get(url, options)`, `http_post(url, body)`,
/// `http_post(url, body, options)` and `http_request(options)`. Without a client (no
/// `[http] allow`), every call is a helper error saying how to enable HTTP.
pub(crate) fn register(engine: &mut Engine, client: Option<Arc<HttpClient>>) {
    let c = client.clone();
    engine.register_fn(
        "http_get",
        move |ctx: NativeCallContext, url: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            let prepared = prepare("http_get", Some(Method::GET), Some(&url), None, None);
            call(&ctx, c.as_deref(), prepared)
        },
    );
    let c = client.clone();
    engine.register_fn(
        "http_get",
        move |ctx: NativeCallContext,
              url: Dynamic,
              options: Dynamic|
              -> Result<Dynamic, Box<EvalAltResult>> {
            let prepared = prepare(
                "http_get",
                Some(Method::GET),
                Some(&url),
                None,
                Some(&options),
            );
            call(&ctx, c.as_deref(), prepared)
        },
    );
    let c = client.clone();
    engine.register_fn(
        "http_post",
        move |ctx: NativeCallContext,
              url: Dynamic,
              body: Dynamic|
              -> Result<Dynamic, Box<EvalAltResult>> {
            let prepared = prepare(
                "http_post",
                Some(Method::POST),
                Some(&url),
                Some(&body),
                None,
            );
            call(&ctx, c.as_deref(), prepared)
        },
    );
    let c = client.clone();
    engine.register_fn(
        "http_post",
        move |ctx: NativeCallContext,
              url: Dynamic,
              body: Dynamic,
              options: Dynamic|
              -> Result<Dynamic, Box<EvalAltResult>> {
            let prepared = prepare(
                "http_post",
                Some(Method::POST),
                Some(&url),
                Some(&body),
                Some(&options),
            );
            call(&ctx, c.as_deref(), prepared)
        },
    );
    let c = client;
    engine.register_fn(
        "http_request",
        move |ctx: NativeCallContext, options: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            let prepared = prepare("http_request", None, None, None, Some(&options));
            call(&ctx, c.as_deref(), prepared)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_client_calls_say_how_to_enable_http() {
        let mut engine = Engine::new_raw();
        register(&mut engine, None);
        let err = engine
            .eval::<Dynamic>(r#"http_get("https://api.example.com/x?secret=1")"#)
            .expect_err("not enabled");
        let text = err.to_string();
        assert!(
            text.contains("http_get: api.example.com: HTTP is not enabled"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        let caught = engine
            .eval::<String>(
                r#"let r = ""; try { http_request(#{url: "https://a.example/"}) } catch (e) { r = e } r"#,
            )
            .expect("catchable");
        assert!(
            caught.starts_with("http_request: a.example: HTTP is not enabled"),
            "{caught}"
        );
    }
}

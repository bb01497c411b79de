//! Sending a call on the runtime while the rule's thread waits (its slot released), bounded by
//! time, size and the run's budget, and the answer as a rhai map.

use std::sync::mpsc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use rhai::{Dynamic, EvalAltResult, NativeCallContext};

use super::client::runtime;
use super::errors::{describe, refusal_error, Refusal};
use super::request::Call;
use super::wait::Released;
use super::HttpClient;

/// How much longer than a call's timeout the rule's thread waits for the runtime's answer
/// before giving up on it (the request itself is bounded by the timeout on the runtime).
const ANSWER_GRACE: Duration = Duration::from_millis(250);

/// What the runtime answers: the response, or why there is none.
enum Answer {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    TimedOut,
    Failed(Refusal),
}

/// Sends `call` on the runtime, bounded by `timeout` and `max_bytes`.
async fn perform(
    client: reqwest::Client,
    call: CallParts,
    timeout: Duration,
    max_bytes: usize,
) -> Answer {
    let host = call.host.clone();
    // A HEAD answer announces the length of a body it does not send.
    let head = call.method == Method::HEAD;
    let work = async move {
        let mut request = client.request(call.method, call.url).headers(call.headers);
        if let Some(body) = call.body {
            request = request.body(body);
        }
        let mut response = request.send().await.map_err(|e| describe(&host, &e))?;
        let too_large = || Refusal {
            host: host.clone(),
            detail: format!("the response is larger than [http] max_response_bytes ({max_bytes})"),
        };
        if !head
            && response
                .content_length()
                .is_some_and(|n| n > max_bytes as u64)
        {
            return Err(too_large());
        }
        let status = response.status().as_u16();
        let mut headers: Vec<(String, String)> = Vec::new();
        for (k, v) in response.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            match headers.iter_mut().find(|(name, _)| name == k.as_str()) {
                Some((_, joined)) => {
                    joined.push_str(", ");
                    joined.push_str(&v);
                }
                None => headers.push((k.as_str().to_owned(), v)),
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&host, &e))? {
            if body.len() + chunk.len() > max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, Refusal>(Answer::Response {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Answer::TimedOut,
        Ok(Ok(answer)) => answer,
        Ok(Err(refusal)) => Answer::Failed(refusal),
    }
}

/// The parts of a [`Call`] the runtime needs.
struct CallParts {
    method: Method,
    url: Url,
    host: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

/// Runs one call from a rule: checks it, sends it on the runtime, waits (slot released) and
/// converts the answer to `#{status, headers, body, json}`.
pub(super) fn call(
    ctx: &NativeCallContext,
    client: Option<&HttpClient>,
    call: Result<Call, String>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let pos = ctx.call_position();
    let err = |msg: String| crate::rules::engine::helper_error(pos, msg);
    let call = call.map_err(err)?;
    let (name, host) = (call.name, call.host.clone());
    let fail = |what: String| err(format!("{name}: {host}: {what}"));
    let Some(client) = client else {
        return Err(fail(
            "HTTP is not enabled for these rules; list the hosts rules may call in `allow` of an [http] table in rules.toml".into(),
        ));
    };
    client
        .policy
        .check(&call.url)
        .map_err(|r| refusal_error(ctx, name, &host, r))?;
    if crate::rules::engine::count_http_call() > client.max_calls {
        return Err(fail(format!(
            "more than [http] max_calls ({}) HTTP calls in one run",
            client.max_calls
        )));
    }
    let own = call.timeout.unwrap_or(client.timeout);
    let (timeout, by_budget) = match crate::rules::engine::time_left() {
        Some(left) if left < own => (left, true),
        _ => (own, false),
    };
    if timeout.is_zero() {
        return Err(crate::rules::engine::deadline_passed(pos));
    }
    let label = client.policy.label(&call.url);
    let started = std::time::Instant::now();
    let rt = runtime().map_err(fail)?;
    let (tx, rx) = mpsc::sync_channel(1);
    let parts = CallParts {
        method: call.method,
        url: call.url,
        host: host.clone(),
        headers: call.headers,
        body: call.body,
    };
    let task = rt.spawn({
        let http = client.client.clone();
        let max = client.max_response_bytes;
        async move {
            let answer = perform(http, parts, timeout, max).await;
            let _ = tx.send(answer);
        }
    });
    let answer = {
        let _released = Released::now();
        rx.recv_timeout(timeout + ANSWER_GRACE)
    };
    let answer = match answer {
        Ok(a) => a,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            task.abort();
            Answer::TimedOut
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Answer::Failed(Refusal {
            host: host.clone(),
            detail: "the request was abandoned".into(),
        }),
    };
    let status = match &answer {
        Answer::Response { status, .. } => status.to_string(),
        Answer::TimedOut => "timeout".into(),
        Answer::Failed(_) => "error".into(),
    };
    metrics::histogram!("claimrules_rule_http_duration_seconds", "host" => label.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("claimrules_rule_http_requests_total", "host" => label, "status" => status)
        .increment(1);
    match answer {
        Answer::TimedOut if by_budget => Err(crate::rules::engine::deadline_passed(pos)),
        Answer::TimedOut => Err(fail(format!("timed out after {} ms", timeout.as_millis()))),
        Answer::Failed(r) => Err(refusal_error(ctx, name, &host, r)),
        Answer::Response {
            status,
            headers,
            body,
        } => {
            let size = body.len();
            let text = String::from_utf8(body)
                .map_err(|_| fail("the response body is not UTF-8".into()))?;
            let json = if text.trim().is_empty() {
                Dynamic::UNIT
            } else {
                serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| rhai::serde::to_dynamic(v).ok())
                    .unwrap_or(Dynamic::UNIT)
            };
            let mut header_map = rhai::Map::new();
            for (k, v) in headers {
                header_map.insert(k.into(), v.into());
            }
            let mut result = rhai::Map::new();
            result.insert("status".into(), Dynamic::from_int(i64::from(status)));
            result.insert("headers".into(), Dynamic::from_map(header_map));
            result.insert("body".into(), text.into());
            result.insert("json".into(), json);
            let result = Dynamic::from_map(result);
            ctx.engine()
                .ensure_data_size_within_limits(&result)
                .map_err(|_| {
                    fail(format!(
                        "the response ({size} bytes, parsed JSON included) exceeds the sandbox's string or map limits"
                    ))
                })?;
            Ok(result)
        }
    }
}

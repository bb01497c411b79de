//! Outbound HTTP from rules (src/rules/http.rs): `http_get`, `http_post`, `http_request`
//! against real HTTP and HTTPS servers on 127.0.0.1 (a test CA trusted through `ca_file`), with
//! every option, every refusal, the timeouts against the pipeline budget, redirects, cookies and
//! the wait-slot hook.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use claimrules::rules::http::{with_wait_slot, HttpClient, HttpConfig, WaitSlot};
use claimrules::rules::{Outcome, RuleError, RuleSet, RuleSetOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Test PKI and servers.

/// A CA and a server certificate for `localhost` and `127.0.0.1` signed by it.
struct Pki {
    ca_path: PathBuf,
    tls: Arc<rustls::ServerConfig>,
    _dir: tempfile::TempDir,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "claimrules test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params,
            rcgen::KeyPair::generate().expect("ca key"),
        )
        .expect("ca");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("server cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write ca");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        Pki {
            ca_path,
            tls: Arc::new(tls),
            _dir: dir,
        }
    })
}

/// The runtime the test servers run on.
fn server_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A server on 127.0.0.1 that records every request.
struct Server {
    port: u16,
    https: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(https: bool) -> Server {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let rt = server_runtime();
        let _enter = rt.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
        let acceptor = tokio_rustls::TlsAcceptor::from(pki().tls.clone());
        let log = seen.clone();
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if https {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            handle(tls, port, https, log).await;
                        }
                    } else {
                        handle(stream, port, https, log).await;
                    }
                });
            }
        });
        Server { port, https, seen }
    }

    fn https() -> Server {
        Server::start(true)
    }

    fn plain() -> Server {
        Server::start(false)
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Serves keep-alive HTTP/1.1 requests on one connection.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    port: u16,
    https: bool,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_owned();
        let target = first.next().unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body = buf[head_end + 4..head_end + 4 + len].to_vec();
        buf.drain(..head_end + 4 + len);
        let seen = Seen {
            method,
            target,
            headers,
            body,
        };
        log.lock().expect("lock").push(seen.clone());
        let mut reply = route(&seen, port, https).await;
        if seen.method == "HEAD" {
            if let Some(end) = find(&reply, b"\r\n\r\n") {
                reply.truncate(end + 4);
            }
        }
        if stream.write_all(&reply).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

async fn route(req: &Seen, port: u16, https: bool) -> Vec<u8> {
    let (path, query) = req
        .target
        .split_once('?')
        .unwrap_or((req.target.as_str(), ""));
    let json_type = ("content-type", "application/json");
    match path {
        "/json" => response(
            200,
            &[
                json_type,
                ("X-Multi", "a"),
                ("X-Multi", "b"),
                ("X-Mixed-Case", "Value"),
            ],
            br#"{"ok":true,"n":1,"name":"x"}"#,
        ),
        "/text" => response(200, &[("content-type", "text/plain")], b"hello"),
        "/echo" => {
            let headers: serde_json::Map<String, Value> = req
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let body = json!({
                "method": req.method,
                "headers": headers,
                "body": String::from_utf8_lossy(&req.body),
            });
            response(200, &[json_type], body.to_string().as_bytes())
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            response(200, &[], b"late")
        }
        "/big" => response(200, &[], &[b'a'; 4096]),
        "/big-chunked" => {
            let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..4 {
                out.extend_from_slice(b"400\r\n");
                out.extend_from_slice(&[b'a'; 1024]);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }
        "/binary" => response(200, &[], &[0xff, 0xfe, 0xfd]),
        "/set-cookie" => response(
            200,
            &[("Set-Cookie", "session=secret; Path=/")],
            b"cookie set",
        ),
        "/redirect" => {
            let to = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "to")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            response(302, &[("location", &to)], b"")
        }
        p if p.starts_with("/loop/") => {
            let n: u32 = p["/loop/".len()..].parse().unwrap_or(0);
            let scheme = if https { "https" } else { "http" };
            let to = format!("{scheme}://127.0.0.1:{port}/loop/{}", n + 1);
            response(302, &[("location", &to)], b"")
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            response(code, &[json_type], br#"{"error":"nope"}"#)
        }
        _ => response(404, &[], b"no such route"),
    }
}

// ---------------------------------------------------------------------------------------------
// Rule sets.

/// HTTP config for the test servers: the test CA, loopback allowed, a roomy budget.
fn config(allow: &[&str]) -> HttpConfig {
    HttpConfig {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        ca_file: Some(pki().ca_path.clone()),
        allow_private: true,
        budget_ms: Some(5000),
        ..Default::default()
    }
}

/// A one-rule set with this HTTP config and pipeline budget.
fn set_with(src: &str, http: Option<HttpConfig>, budget: Duration) -> RuleSet {
    let mut options = RuleSetOptions {
        http,
        ..Default::default()
    };
    options.limits.pipeline_budget = budget;
    RuleSet::from_sources(vec![("caller".into(), src.into())], json!({}), options)
        .expect("compiles")
}

fn set(src: &str, http: HttpConfig) -> RuleSet {
    set_with(src, Some(http), Duration::from_secs(5))
}

fn run(set: &RuleSet) -> Result<Outcome, RuleError> {
    set.run(json!({"user_id": "auth0|1"}), json!({}))
}

/// Runs a rule that stores its result in the claim `https://example.com/r`.
fn result_of(set: &RuleSet) -> Value {
    let out = run(set).expect("the run succeeds");
    out.access_token
        .get("https://example.com/r")
        .cloned()
        .expect("the rule set the claim")
}

/// The message of the helper error a rule caught (`r = e` in the catch block).
fn caught(src_call: &str, http: HttpConfig) -> String {
    let src = format!(
        "let r = \"no error\";\ntry {{ {src_call}; }} catch (e) {{ r = e; }}\ncontext.accessToken[\"https://example.com/r\"] = r;"
    );
    match result_of(&set(&src, http)) {
        Value::String(s) => s,
        other => panic!("caught a non-string: {other}"),
    }
}

/// The message of the uncaught helper error that failed the run (a script error, not a denial).
fn uncaught(src: &str, http: Option<HttpConfig>) -> String {
    let err = run(&set_with(src, http, Duration::from_secs(5))).expect_err("the run fails");
    match err {
        RuleError::Script { message, rule, .. } => {
            assert_eq!(rule, "caller");
            message
        }
        other => panic!("expected a script error, got {other:?}"),
    }
}

fn claim(expr: &str) -> String {
    format!("let r = {expr};\ncontext.accessToken[\"https://example.com/r\"] = r;")
}

// ---------------------------------------------------------------------------------------------
// Results and sending.

#[test]
fn http_get_returns_status_lowercased_headers_body_and_json() {
    let server = Server::https();
    let r = result_of(&set(
        &claim(&format!("http_get({:?})", server.url("/json"))),
        config(&["127.0.0.1"]),
    ));
    assert_eq!(r["status"], json!(200));
    assert_eq!(r["body"], json!(r#"{"ok":true,"n":1,"name":"x"}"#));
    assert_eq!(r["json"], json!({"ok": true, "n": 1, "name": "x"}));
    assert_eq!(r["headers"]["x-multi"], json!("a, b"));
    assert_eq!(r["headers"]["x-mixed-case"], json!("Value"));
    assert_eq!(r["headers"]["content-type"], json!("application/json"));
    assert!(r["headers"].get("X-Mixed-Case").is_none());
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].header("user-agent"),
        Some(concat!("claimrules/", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn http_get_options_send_headers() {
    let server = Server::https();
    let r = result_of(&set(
        &claim(&format!(
            "http_get({:?}, #{{headers: #{{\"X-Api-Key\": \"k1\", \"x-n\": 7}}, timeout_ms: 1500}})",
            server.url("/text?q=1")
        )),
        config(&["127.0.0.1"]),
    ));
    assert_eq!(r["status"], json!(200));
    assert_eq!(r["body"], json!("hello"));
    assert_eq!(r["json"], Value::Null, "a text body has json = ()");
    let seen = server.seen();
    assert_eq!(seen[0].target, "/text?q=1");
    assert_eq!(seen[0].header("x-api-key"), Some("k1"));
    assert_eq!(seen[0].header("x-n"), Some("7"));
}

#[test]
fn http_post_sends_a_string_as_is_and_a_map_or_array_as_json() {
    let server = Server::https();
    let src = format!(
        r#"
        let a = http_post({u:?}, "raw text", #{{headers: #{{"content-type": "text/plain"}}}});
        let b = http_post({u:?}, #{{name: "x", list: [1, true]}}, #{{}});
        let c = http_post({u:?}, [1, 2]);
        context.accessToken["https://example.com/r"] = [a.status, b.json.method, c.status];
        "#,
        u = server.url("/echo")
    );
    assert_eq!(
        result_of(&set(&src, config(&["127.0.0.1"]))),
        json!([200, "POST", 200])
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.method == "POST"));
    assert_eq!(seen[0].body, b"raw text");
    assert_eq!(seen[0].header("content-type"), Some("text/plain"));
    assert_eq!(seen[1].header("content-type"), Some("application/json"));
    let sent: Value = serde_json::from_slice(&seen[1].body).expect("json body");
    assert_eq!(sent, json!({"name": "x", "list": [1, true]}));
    assert_eq!(seen[2].body, b"[1,2]");
}

#[test]
fn http_request_sends_method_json_form_and_body() {
    let server = Server::https();
    let src = format!(
        r#"
        let a = http_request(#{{method: "put", url: {u:?}, json: #{{k: [1, "two"]}}}});
        let b = http_request(#{{method: "POST", url: {u:?}, form: #{{a: "1 2", b: "x&y", n: 3}}}});
        let c = http_request(#{{method: "PATCH", url: {u:?}, body: "plain",
                               headers: #{{"content-type": "text/x-custom"}}}});
        let d = http_request(#{{url: {u:?}}});
        let e = http_request(#{{method: "DELETE", url: {u:?}, json: "just a string"}});
        context.accessToken["https://example.com/r"] =
            [a.json.method, b.json.method, c.json.method, d.json.method, e.json.method];
        "#,
        u = server.url("/echo")
    );
    assert_eq!(
        result_of(&set(&src, config(&["127.0.0.1"]))),
        json!(["PUT", "POST", "PATCH", "GET", "DELETE"])
    );
    let seen = server.seen();
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_slice::<Value>(&seen[0].body).expect("json"),
        json!({"k": [1, "two"]})
    );
    assert_eq!(
        seen[1].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(String::from_utf8_lossy(&seen[1].body), "a=1+2&b=x%26y&n=3");
    assert_eq!(seen[2].body, b"plain");
    assert_eq!(seen[2].header("content-type"), Some("text/x-custom"));
    assert!(seen[3].body.is_empty());
    assert_eq!(seen[4].body, br#""just a string""#);
}

#[test]
fn a_non_2xx_status_is_a_result_not_an_error() {
    let server = Server::https();
    let r = result_of(&set(
        &claim(&format!("http_get({:?})", server.url("/status/404"))),
        config(&["127.0.0.1"]),
    ));
    assert_eq!(r["status"], json!(404));
    assert_eq!(r["json"], json!({"error": "nope"}));
    let r = result_of(&set(
        &claim(&format!("http_get({:?}).status", server.url("/status/503"))),
        config(&["127.0.0.1"]),
    ));
    assert_eq!(r, json!(503));
}

#[test]
fn no_cookies_are_kept_between_calls() {
    let server = Server::https();
    let src = format!(
        r#"
        let a = http_get({:?});
        let b = http_get({:?});
        context.accessToken["https://example.com/r"] = [a.headers["set-cookie"], b.json.headers.cookie];
        "#,
        server.url("/set-cookie"),
        server.url("/echo")
    );
    assert_eq!(
        result_of(&set(&src, config(&["127.0.0.1"]))),
        json!(["session=secret; Path=/", null])
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("cookie"), None);
}

#[test]
fn plain_http_works_for_an_http_entry() {
    let server = Server::plain();
    let r = result_of(&set(
        &claim(&format!("http_get({:?}).json", server.url("/json"))),
        config(&["http://127.0.0.1"]),
    ));
    assert_eq!(r["ok"], json!(true));
}

// ---------------------------------------------------------------------------------------------
// Errors: catchable, uncaught they fail the run as script errors.

#[test]
fn errors_are_catchable_and_uncaught_fail_the_run_as_script_errors() {
    let msg = caught(
        "http_get(\"https://not-allowed.example/x?token=s3cret\")",
        config(&["127.0.0.1"]),
    );
    assert_eq!(
        msg,
        "http_get: not-allowed.example: not in the [http] allow list"
    );
    let msg = uncaught(
        "http_get(\"https://not-allowed.example/x?token=s3cret\");",
        Some(config(&["127.0.0.1"])),
    );
    assert!(
        msg.contains("http_get: not-allowed.example: not in the [http] allow list"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
}

#[test]
fn without_http_config_every_call_says_how_to_enable_it() {
    for http in [None, Some(HttpConfig::default())] {
        let msg = uncaught("http_get(\"https://api.example.com/\");", http);
        assert!(
            msg.contains("http_get: api.example.com: HTTP is not enabled"),
            "{msg}"
        );
        assert!(msg.contains("[http]"), "{msg}");
    }
    for call in [
        "http_post(\"https://api.example.com/\", \"x\", #{})",
        "http_request(#{url: \"https://api.example.com/\"})",
    ] {
        let msg = uncaught(&format!("{call};"), None);
        assert!(msg.contains("HTTP is not enabled"), "{msg}");
    }
}

#[test]
fn bad_options_are_errors() {
    let server = Server::https();
    let u = server.url("/echo");
    let http = || config(&["127.0.0.1"]);
    let cases = [
        (
            format!("http_get({u:?}, #{{bogus: 1}})"),
            "http_get: 127.0.0.1: unknown option \"bogus\"",
        ),
        (
            format!("http_get({u:?}, #{{method: \"POST\"}})"),
            "http_get: 127.0.0.1: option \"method\"",
        ),
        (
            format!("http_request(#{{url: {u:?}, json: 1, body: \"x\"}})"),
            "give only one of body, json and form",
        ),
        (
            format!("http_post({u:?}, \"x\", #{{json: 1}})"),
            "the body is the second argument",
        ),
        (
            format!("http_request(#{{url: {u:?}, timeout_ms: 0}})"),
            "timeout_ms\" must be a positive integer",
        ),
        (
            format!("http_request(#{{url: {u:?}, method: \"CONNECT\"}})"),
            "unsupported method",
        ),
        (
            format!("http_request(#{{url: {u:?}, headers: #{{host: \"evil\"}}}})"),
            "header \"host\" is set by the client",
        ),
        (
            "http_request(#{})".to_owned(),
            "http_request: options need a url",
        ),
        (
            "http_get(\"not a url\")".to_owned(),
            "http_get: invalid URL",
        ),
        (format!("http_get({u:?}, 5)"), "options must be a map"),
    ];
    for (call, want) in cases {
        let msg = caught(&call, http());
        assert!(msg.contains(want), "{call}: {msg}");
    }
    assert!(server.seen().is_empty(), "no bad call reached the server");
}

#[test]
fn refused_urls_scheme_userinfo_and_plain_http() {
    let server = Server::https();
    let plain = Server::plain();
    let http = || config(&["127.0.0.1"]);
    let msg = caught(
        &format!("http_get(\"ftp://127.0.0.1:{}/x\")", server.port),
        http(),
    );
    assert!(
        msg.starts_with("http_get: 127.0.0.1: ftp URLs are refused"),
        "{msg}"
    );
    let msg = caught(
        &format!(
            "http_get(\"https://user:pw-s3cret@127.0.0.1:{}/json\")",
            server.port
        ),
        http(),
    );
    assert!(
        msg.starts_with("http_get: 127.0.0.1: URLs with userinfo are refused"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
    let msg = caught(&format!("http_get({:?})", plain.url("/json")), http());
    assert!(
        msg.starts_with("http_get: 127.0.0.1: plain http is refused"),
        "{msg}"
    );
    assert!(server.seen().is_empty() && plain.seen().is_empty());
}

#[test]
fn private_addresses_are_refused_unless_allow_private() {
    let server = Server::https();
    let http = || HttpConfig {
        allow_private: false,
        ..config(&["127.0.0.1", "localhost"])
    };
    // An IP literal is checked before any connection.
    let msg = caught(&format!("http_get({:?})", server.url("/json")), http());
    assert!(
        msg.starts_with("http_get: 127.0.0.1: 127.0.0.1 is a loopback"),
        "{msg}"
    );
    assert!(msg.contains("allow_private"), "{msg}");
    // A name is checked on what it resolves to.
    let msg = caught(
        &format!("http_get(\"https://localhost:{}/json\")", server.port),
        http(),
    );
    assert!(
        msg.starts_with("http_get: localhost: resolves to "),
        "{msg}"
    );
    assert!(
        msg.contains("is a loopback, private or link-local address"),
        "{msg}"
    );
    assert!(server.seen().is_empty());
    // With allow_private, the same name works.
    let r = result_of(&set(
        &claim(&format!(
            "http_get(\"https://localhost:{}/json\").status",
            server.port
        )),
        config(&["localhost"]),
    ));
    assert_eq!(r, json!(200));
}

#[test]
fn connection_refused_is_an_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let msg = caught(
        &format!("http_get(\"https://127.0.0.1:{port}/\")"),
        config(&["127.0.0.1"]),
    );
    assert_eq!(msg, "http_get: 127.0.0.1: connection refused");
}

#[test]
fn responses_over_max_response_bytes_are_refused() {
    let server = Server::https();
    let http = || HttpConfig {
        max_response_bytes: 1000,
        ..config(&["127.0.0.1"])
    };
    for path in ["/big", "/big-chunked"] {
        let msg = caught(&format!("http_get({:?})", server.url(path)), http());
        assert_eq!(
            msg,
            "http_get: 127.0.0.1: the response is larger than [http] max_response_bytes (1000)",
            "{path}"
        );
    }
    // A HEAD answer announces a length it does not send.
    let r = result_of(&set(
        &claim(&format!(
            "http_request(#{{method: \"HEAD\", url: {:?}}})",
            server.url("/big")
        )),
        http(),
    ));
    assert_eq!((&r["status"], &r["body"]), (&json!(200), &json!("")));
    assert_eq!(r["headers"]["content-length"], json!("4096"));
    // At the limit it is fine.
    let r = result_of(&set(
        &claim(&format!("http_get({:?}).body.len()", server.url("/big"))),
        HttpConfig {
            max_response_bytes: 4096,
            ..config(&["127.0.0.1"])
        },
    ));
    assert_eq!(r, json!(4096));
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_an_error() {
    let server = Server::https();
    let msg = caught(
        &format!("http_get({:?})", server.url("/json")),
        HttpConfig {
            ca_file: None,
            ..config(&["127.0.0.1"])
        },
    );
    assert!(
        msg.starts_with("http_get: 127.0.0.1: TLS: invalid peer certificate"),
        "{msg}"
    );
    assert!(server.seen().is_empty());
}

#[test]
fn a_body_that_is_not_utf8_is_an_error() {
    let server = Server::https();
    let msg = caught(
        &format!("http_get({:?})", server.url("/binary")),
        config(&["127.0.0.1"]),
    );
    assert_eq!(msg, "http_get: 127.0.0.1: the response body is not UTF-8");
}

#[test]
fn max_calls_per_run() {
    let server = Server::https();
    let http = || HttpConfig {
        max_calls: 2,
        ..config(&["127.0.0.1"])
    };
    let src = format!(
        r#"
        let n = 0;
        let r = "no error";
        try {{
            for i in 0..3 {{ http_get({u:?}); n += 1; }}
        }} catch (e) {{ r = e; }}
        context.accessToken["https://example.com/r"] = [n, r];
        "#,
        u = server.url("/text")
    );
    let set = set(&src, http());
    assert_eq!(
        result_of(&set),
        json!([
            2,
            "http_get: 127.0.0.1: more than [http] max_calls (2) HTTP calls in one run"
        ])
    );
    // The count is per run.
    assert_eq!(result_of(&set)[0], json!(2));
    assert_eq!(server.seen().len(), 4);
}

// ---------------------------------------------------------------------------------------------
// Timeouts and the pipeline budget.

#[test]
fn a_calls_own_shorter_timeout_is_catchable() {
    let server = Server::https();
    let started = Instant::now();
    let msg = caught(
        &format!("http_get({:?}, #{{timeout_ms: 200}})", server.url("/slow")),
        config(&["127.0.0.1"]),
    );
    assert_eq!(msg, "http_get: 127.0.0.1: timed out after 200 ms");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_configured_timeout_applies_when_the_call_sets_none() {
    let server = Server::https();
    let msg = caught(
        &format!("http_get({:?})", server.url("/slow")),
        HttpConfig {
            timeout_ms: 200,
            ..config(&["127.0.0.1"])
        },
    );
    assert_eq!(msg, "http_get: 127.0.0.1: timed out after 200 ms");
}

#[test]
fn a_call_clipped_by_the_pipeline_budget_ends_the_run_with_timeout() {
    let server = Server::https();
    let http = HttpConfig {
        budget_ms: Some(300),
        ..config(&["127.0.0.1"])
    };
    let src = format!(
        r#"
        let r = "no error";
        try {{ http_get({:?}); }} catch (e) {{ r = e; }}
        context.accessToken["https://example.com/r"] = r;
        "#,
        server.url("/slow")
    );
    let set = set_with(&src, Some(http), Duration::from_millis(300));
    let started = Instant::now();
    let err = run(&set).expect_err("the budget stops the run");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    match err {
        RuleError::Timeout {
            rule, budget_ms, ..
        } => {
            assert_eq!(rule, "caller");
            assert_eq!(budget_ms, 300);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Redirects.

fn redirect_to(server: &Server, to: &str) -> String {
    let q: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
    server.url(&format!("/redirect?to={q}"))
}

#[test]
fn a_redirect_to_an_allowed_host_is_followed() {
    let server = Server::https();
    let to = format!("https://localhost:{}/json", server.port);
    let r = result_of(&set(
        &claim(&format!("http_get({:?})", redirect_to(&server, &to))),
        config(&["127.0.0.1", "localhost"]),
    ));
    assert_eq!(r["status"], json!(200));
    assert_eq!(r["json"]["ok"], json!(true));
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn a_redirect_outside_the_allow_list_is_refused() {
    let server = Server::https();
    let plain = Server::plain();
    let msg = caught(
        &format!(
            "http_get({:?})",
            redirect_to(&server, "https://evil.example/steal?k=s3cret")
        ),
        config(&["127.0.0.1"]),
    );
    assert_eq!(
        msg,
        "http_get: 127.0.0.1: redirected to evil.example: not in the [http] allow list"
    );
    // A downgrade to plain http follows the same scheme rule.
    let msg = caught(
        &format!("http_get({:?})", redirect_to(&server, &plain.url("/json"))),
        config(&["127.0.0.1"]),
    );
    assert!(msg.contains(": plain http is refused"), "{msg}");
    assert!(plain.seen().is_empty());
    // At most five hops.
    let msg = caught(
        &format!("http_get({:?})", server.url("/loop/0")),
        config(&["127.0.0.1"]),
    );
    assert_eq!(msg, "http_get: 127.0.0.1: more than 5 redirects");
    let loops = server
        .seen()
        .iter()
        .filter(|s| s.target.starts_with("/loop/"))
        .count();
    assert_eq!(loops, 6, "the first request and five redirects");
}

// ---------------------------------------------------------------------------------------------
// Configuration.

#[test]
fn http_client_new_validates_allow_entries() {
    for bad in [
        "",
        " ",
        "*",
        "https://api.example.com/path",
        "api.example.com/",
        "user@api.example.com",
        "https://user:pw@api.example.com",
        "api.exa mple.com",
        "api.example.com:0",
        "api.example.com:99999",
        "api.example.com:",
        "ftp://api.example.com",
        "*.*.example.com",
        "a*.example.com",
        "-bad.example.com",
        "[::1",
    ] {
        let config = HttpConfig {
            allow: vec![bad.to_owned()],
            ..Default::default()
        };
        let err = HttpClient::new(&config, None).expect_err(bad);
        assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
    }
    let good = HttpConfig {
        allow: [
            "api.example.com",
            "API.Example.COM",
            "*.corp.example",
            "https://login.example.com:8443",
            "http://10.0.0.1:8080",
            "127.0.0.1",
            "[::1]:443",
            "::1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..Default::default()
    };
    HttpClient::new(&good, None).expect("valid entries");
}

#[test]
fn http_client_new_reads_ca_file_relative_to_the_rules_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&pki().ca_path, dir.path().join("ca.pem")).expect("copy");
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").expect("write");
    let with = |file: &str| HttpConfig {
        allow: vec!["api.example.com".into()],
        ca_file: Some(PathBuf::from(file)),
        ..Default::default()
    };
    HttpClient::new(&with("ca.pem"), Some(dir.path())).expect("relative ca_file");
    let err = HttpClient::new(&with("missing.pem"), Some(dir.path())).expect_err("missing");
    assert!(
        err.contains("ca_file") && err.contains("missing.pem"),
        "{err}"
    );
    let err = HttpClient::new(&with("junk.pem"), Some(dir.path())).expect_err("junk");
    assert!(err.contains("ca_file") && err.contains("junk.pem"), "{err}");
    // A set whose config is invalid does not load.
    let options = RuleSetOptions {
        http: Some(HttpConfig {
            allow: vec!["https://api.example.com/path".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = RuleSet::from_sources(vec![("r".into(), "1;".into())], json!({}), options)
        .expect_err("invalid [http]");
    assert!(err.to_string().contains("api.example.com/path"), "{err}");
}

#[test]
fn wildcard_entries_match_subdomains_only() {
    // Refused before any lookup, so these names need not exist.
    let http = || config(&["*.corp.example"]);
    let msg = caught("http_get(\"https://corp.example/\")", http());
    assert_eq!(msg, "http_get: corp.example: not in the [http] allow list");
    let msg = caught("http_get(\"https://xcorp.example/\")", http());
    assert_eq!(msg, "http_get: xcorp.example: not in the [http] allow list");
}

// ---------------------------------------------------------------------------------------------
// The wait-slot hook.

#[derive(Default)]
struct CountingSlot {
    released: AtomicUsize,
    reacquired: AtomicUsize,
}

impl WaitSlot for CountingSlot {
    fn release(&self) {
        // Never released twice without a reacquire in between.
        assert_eq!(
            self.released.load(Ordering::SeqCst),
            self.reacquired.load(Ordering::SeqCst)
        );
        self.released.fetch_add(1, Ordering::SeqCst);
    }

    fn reacquire(&self) {
        self.reacquired.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_waiting_rule_releases_and_reacquires_its_slot() {
    let server = Server::https();
    let src = format!(
        r#"
        let a = http_get({u:?});
        try {{ http_get({slow:?}, #{{timeout_ms: 100}}); }} catch {{ }}
        context.accessToken["https://example.com/r"] = a.status;
        "#,
        u = server.url("/text"),
        slow = server.url("/slow")
    );
    let calls = set(&src, config(&["127.0.0.1"]));
    let slot = Arc::new(CountingSlot::default());
    let out = with_wait_slot(slot.clone(), || run(&calls)).expect("run");
    assert_eq!(out.access_token["https://example.com/r"], json!(200));
    assert_eq!(slot.released.load(Ordering::SeqCst), 2);
    assert_eq!(slot.reacquired.load(Ordering::SeqCst), 2);
    // Outside `with_wait_slot` the slot is no longer used.
    run(&calls).expect("run");
    assert_eq!(slot.released.load(Ordering::SeqCst), 2);
    // A refused call never waits, so it does not release.
    let refused = set(
        "try { http_get(\"https://elsewhere.example/\"); } catch { }",
        config(&["127.0.0.1"]),
    );
    with_wait_slot(slot.clone(), || run(&refused)).expect("run");
    assert_eq!(slot.released.load(Ordering::SeqCst), 2);
}

#[test]
fn rule_sets_serve_concurrent_runs() {
    let server = Arc::new(Server::https());
    let set = Arc::new(set(
        &claim(&format!("http_get({:?}).json.n", server.url("/json"))),
        config(&["127.0.0.1"]),
    ));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let set = set.clone();
            std::thread::spawn(move || (0..5).map(|_| result_of(&set)).collect::<Vec<_>>())
        })
        .collect();
    for t in threads {
        assert!(t.join().expect("thread").iter().all(|v| v == &json!(1)));
    }
    assert_eq!(server.seen().len(), 20);
}

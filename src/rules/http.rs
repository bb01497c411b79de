//! Outbound HTTP from rules: `http_get`, `http_post`, `http_request`, configured by the
//! `[http]` table of `rules.toml`.
//!
//! Rules run synchronously (on a blocking thread in the server, on plain threads in the CLI),
//! so each call is handed to one process-wide tokio runtime and the rule's thread waits for the
//! answer on a channel. What a call may reach is decided here, not by the rule: https only
//! (plain http only for `http://` allow entries), hosts from the allow list only, no
//! loopback/private/link-local addresses unless `allow_private`, redirects re-checked hop by
//! hop, no cookie store, no proxies, bounded time, size and number of calls.

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

/// The `[http]` table of `rules.toml`. Without `allow` entries rules cannot call HTTP at all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Host patterns rules may call: `api.example.com`, `*.corp.example`; an `http://` prefix
    /// also allows plain http for that pattern (https only otherwise).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Default timeout of one call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body accepted, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Most calls one pipeline run may make.
    #[serde(default = "default_max_calls")]
    pub max_calls: u32,
    /// Extra trusted root certificates (PEM), relative to the rules folder.
    pub ca_file: Option<PathBuf>,
    /// Allows names that resolve to loopback, private or link-local addresses (tests, labs).
    #[serde(default)]
    pub allow_private: bool,
    /// The pipeline's wall-clock budget when HTTP is configured, in milliseconds
    /// (default [`DEFAULT_HTTP_BUDGET_MS`]); it only ever raises the sandbox's budget.
    pub budget_ms: Option<u64>,
}

/// The pipeline budget of a rule set that may call HTTP, unless `[http] budget_ms` says otherwise:
/// room for two calls at the default timeout.
pub const DEFAULT_HTTP_BUDGET_MS: u64 = 5000;

fn default_timeout_ms() -> u64 {
    2000
}

fn default_max_response_bytes() -> usize {
    1024 * 1024
}

fn default_max_calls() -> u32 {
    10
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow: Vec::new(),
            timeout_ms: default_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
            max_calls: default_max_calls(),
            ca_file: None,
            allow_private: false,
            budget_ms: None,
        }
    }
}

impl HttpConfig {
    /// Whether rules may call HTTP at all.
    pub fn enabled(&self) -> bool {
        !self.allow.is_empty()
    }
}

/// Most redirects one call follows; each hop is checked against the allow list.
const MAX_REDIRECTS: usize = 5;

/// How much longer than a call's timeout the rule's thread waits for the runtime's answer
/// before giving up on it (the request itself is bounded by the timeout on the runtime).
const ANSWER_GRACE: Duration = Duration::from_millis(250);

/// The option keys `options` maps accept.
const OPTION_KEYS: &str = "method, url, headers, body, json, form, timeout_ms";

/// One entry of `[http] allow`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowEntry {
    host: HostPattern,
    /// Only this port; any port when `None`.
    port: Option<u16>,
    /// Written with an `http://` prefix: plain http is allowed too.
    plain_http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `api.example.com` (lower-case).
    Name(String),
    /// `*.corp.example`, kept as `.corp.example`: any name ending with it.
    Suffix(String),
    /// An IP address literal.
    Ip(IpAddr),
}

impl AllowEntry {
    /// Parses one entry; the error says what is wrong with it (the caller names the entry).
    fn parse(entry: &str) -> Result<AllowEntry, &'static str> {
        if entry.trim().is_empty() {
            return Err("empty entry");
        }
        let lower = entry.to_ascii_lowercase();
        let (rest, plain_http) = if let Some(r) = lower.strip_prefix("http://") {
            (r, true)
        } else if let Some(r) = lower.strip_prefix("https://") {
            (r, false)
        } else if lower.contains("://") {
            return Err("only an http:// or https:// prefix is allowed");
        } else {
            (lower.as_str(), false)
        };
        if rest.contains('@') {
            return Err("userinfo is not allowed");
        }
        if rest.contains(['/', '?', '#']) {
            return Err("a path is not allowed (list hosts only)");
        }
        let (host, port) = split_port(rest)?;
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            HostPattern::Ip(IpAddr::V6(v6.parse().map_err(|_| "invalid IPv6 address")?))
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else if host == "*" {
            return Err("`*` alone would allow every host");
        } else if let Some(suffix) = host.strip_prefix("*.") {
            valid_name(suffix)?;
            HostPattern::Suffix(format!(".{suffix}"))
        } else {
            valid_name(host)?;
            HostPattern::Name(host.to_owned())
        };
        Ok(AllowEntry {
            host,
            port,
            plain_http,
        })
    }

    fn matches(&self, host: &url::Host<&str>, port: Option<u16>) -> bool {
        if self.port.is_some() && self.port != port {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Ip(ip), url::Host::Ipv4(a)) => *ip == IpAddr::V4(*a),
            (HostPattern::Ip(ip), url::Host::Ipv6(a)) => *ip == IpAddr::V6(*a),
            (HostPattern::Name(n), url::Host::Domain(d)) => n == &normalized(d),
            (HostPattern::Suffix(s), url::Host::Domain(d)) => {
                let d = normalized(d);
                d.len() > s.len() && d.ends_with(s.as_str())
            }
            _ => false,
        }
    }
}

/// A URL host compared with allow entries: lower-case, without a trailing dot.
fn normalized(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Splits `host[:port]` (`[v6]:port` for IPv6); a bare IPv6 address has no port.
fn split_port(rest: &str) -> Result<(&str, Option<u16>), &'static str> {
    let colon = if rest.starts_with('[') {
        match rest.find(']') {
            Some(end) if end + 1 == rest.len() => None,
            Some(end) if rest[end + 1..].starts_with(':') => Some(end + 1),
            _ => return Err("invalid IPv6 literal"),
        }
    } else if rest.parse::<Ipv6Addr>().is_ok() {
        None
    } else {
        rest.rfind(':')
    };
    let Some(i) = colon else {
        return Ok((rest, None));
    };
    let port = rest[i + 1..]
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or("invalid port")?;
    Ok((&rest[..i], Some(port)))
}

/// A DNS name as RFC 1123 §2.1 allows it: dot-separated labels of letters, digits and
/// hyphens, 1 to 63 characters, no hyphen first or last, 253 characters at most.
fn valid_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("invalid host name");
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err("invalid character or label in host name");
        }
    }
    Ok(())
}

/// Addresses a rule may not reach unless `allow_private`: loopback and "this network"
/// (RFC 1122 §3.2.1.3), private (RFC 1918), shared (RFC 6598), link-local (RFC 3927,
/// RFC 4291 §2.5.6), unique local (RFC 4193), the deprecated site-local range (RFC 3879),
/// broadcast and unspecified; IPv4-mapped (RFC 4291 §2.5.5.2) and NAT64 (RFC 6052)
/// addresses are judged by the IPv4 address they carry.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let seg = v6.segments();
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return is_private_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
        }
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
}

/// Why a call was refused or failed, for the host it was about (a redirect target may differ
/// from the called host). Never carries a query string or a header value.
#[derive(Debug, Clone)]
struct Refusal {
    host: String,
    detail: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.host, self.detail)
    }
}

impl std::error::Error for Refusal {}

/// The parsed allow list with the scheme and address rules.
#[derive(Debug)]
struct Policy {
    entries: Vec<AllowEntry>,
    allow_private: bool,
}

impl Policy {
    /// The allow-list pattern that admits `url` (a bounded metrics label: never the URL itself).
    fn label(&self, url: &Url) -> String {
        let (Some(host), port) = (url.host(), url.port_or_known_default()) else {
            return "?".into();
        };
        self.entries
            .iter()
            .find(|e| e.matches(&host, port))
            .map_or_else(
                || "?".into(),
                |e| match &e.host {
                    HostPattern::Name(n) => n.clone(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                    HostPattern::Ip(ip) => ip.to_string(),
                },
            )
    }

    /// Whether a rule may call `url`: scheme, userinfo, allow list, IP-literal addresses (the
    /// resolver is not asked for those).
    fn check(&self, url: &Url) -> Result<(), Refusal> {
        let host_str = url.host_str().unwrap_or("").to_owned();
        let refuse = |detail: String| Refusal {
            host: host_str.clone(),
            detail,
        };
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(refuse(format!(
                "{scheme} URLs are refused (https only, or http for hosts allowed with http://)"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(
                "URLs with userinfo are refused (send credentials in a header)".into(),
            ));
        }
        let Some(host) = url.host() else {
            return Err(refuse("the URL has no host".into()));
        };
        let port = url.port_or_known_default();
        let mut matching = self.entries.iter().filter(|e| e.matches(&host, port));
        let Some(first) = matching.next() else {
            return Err(refuse("not in the [http] allow list".into()));
        };
        let plain_ok = first.plain_http || matching.any(|e| e.plain_http);
        if scheme == "http" && !plain_ok {
            return Err(refuse(format!(
                "plain http is refused (https only; an `http://{host_str}` entry in [http] allow permits it)"
            )));
        }
        let ip = match host {
            url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
            url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = ip.filter(|ip| !self.allow_private && is_private(*ip)) {
            return Err(refuse(private_detail(ip)));
        }
        Ok(())
    }
}

fn private_detail(ip: IpAddr) -> String {
    format!(
        "{ip} is a loopback, private or link-local address (refused unless [http] allow_private = true)"
    )
}

/// Resolves names with the system resolver and drops the addresses rules may not reach.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let refuse = |detail: String| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(Refusal {
                    host: host.clone(),
                    detail,
                })
            };
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| refuse(format!("cannot resolve the name: {e}")))?
                .collect();
            let usable: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            match (usable.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(usable.into_iter()) as reqwest::dns::Addrs),
                (true, Some(a)) => Err(refuse(format!("resolves to {}", private_detail(a.ip())))),
                (true, None) => Err(refuse("the name has no address".into())),
            }
        })
    }
}

/// The HTTP client of one rule set: the allow list, the limits and one connection pool.
pub struct HttpClient {
    client: reqwest::Client,
    policy: Arc<Policy>,
    timeout: Duration,
    max_response_bytes: usize,
    max_calls: u32,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("allow", &self.policy.entries)
            .field("allow_private", &self.policy.allow_private)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_calls", &self.max_calls)
            .finish_non_exhaustive()
    }
}

/// The runtime every rule's HTTP call runs on: one worker (calls are I/O-bound), built once,
/// never dropped (dropping a runtime inside another one's context panics).
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("claimrules-http")
                .enable_all()
                .build()
                .map_err(|e| format!("[http]: cannot start the HTTP runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The system's trusted roots, read once per process.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

impl HttpClient {
    /// Validates `config` and builds the client: every `allow` entry must be `host`,
    /// `*.suffix` or an IP literal, with an optional `http://`/`https://` prefix and `:port`;
    /// `ca_file` (PEM, relative to `rules_dir` when given) adds trusted roots to the system's.
    pub fn new(config: &HttpConfig, rules_dir: Option<&Path>) -> Result<HttpClient, String> {
        let entries = config
            .allow
            .iter()
            .map(|e| AllowEntry::parse(e).map_err(|why| format!("[http] allow entry {e:?}: {why}")))
            .collect::<Result<Vec<_>, _>>()?;
        if config.timeout_ms == 0 {
            return Err("[http] timeout_ms must be at least 1".into());
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(native_roots().iter().cloned());
        if let Some(ca) = &config.ca_file {
            let path = match rules_dir {
                Some(dir) if ca.is_relative() => dir.join(ca),
                _ => ca.clone(),
            };
            let shown = path.display();
            let pem = std::fs::read(&path).map_err(|e| format!("[http] ca_file {shown}: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("[http] ca_file {shown}: invalid PEM: {e}"))?;
            if certs.is_empty() {
                return Err(format!("[http] ca_file {shown}: no certificate in it"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("[http] ca_file {shown}: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("[http]: TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();

        let policy = Arc::new(Policy {
            entries,
            allow_private: config.allow_private,
        });
        let redirect_policy = {
            let policy = policy.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    let host = attempt.url().host_str().unwrap_or("").to_owned();
                    return attempt.error(Refusal {
                        host,
                        detail: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                match policy.check(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            })
        };
        // Built inside the runtime's context, where its connection pool will live.
        let _context = runtime()?.enter();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private,
            }))
            .redirect(redirect_policy)
            .no_proxy()
            .referer(false)
            .user_agent(concat!("claimrules/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("[http]: cannot build the HTTP client: {e}"))?;
        Ok(HttpClient {
            client,
            policy,
            timeout: Duration::from_millis(config.timeout_ms),
            max_response_bytes: config.max_response_bytes,
            max_calls: config.max_calls,
        })
    }
}

/// Lets a rule that waits for an HTTP answer give back the CPU slot it runs in (the server
/// bounds how many rules compute at once), and take one again before it goes on.
pub trait WaitSlot: Send + Sync {
    /// Called before the rule's thread starts waiting for an answer.
    fn release(&self);
    /// Called once the answer is in, before the rule goes on; may block until a slot is free.
    fn reacquire(&self);
}

thread_local! {
    static WAIT_SLOT: RefCell<Option<Arc<dyn WaitSlot>>> = const { RefCell::new(None) };
}

/// Runs `f` with `slot` as this thread's [`WaitSlot`]: every HTTP call a rule makes inside `f`
/// releases it while waiting. The previous slot is restored when `f` returns or panics.
pub fn with_wait_slot<R>(slot: Arc<dyn WaitSlot>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn WaitSlot>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            WAIT_SLOT.with(|s| *s.borrow_mut() = previous);
        }
    }
    let previous = WAIT_SLOT.with(|s| s.borrow_mut().replace(slot));
    let _restore = Restore(previous);
    f()
}

/// Holds the released slot; takes it back on drop.
struct Released(Option<Arc<dyn WaitSlot>>);

impl Released {
    fn now() -> Released {
        let slot = WAIT_SLOT.with(|s| s.borrow().clone());
        if let Some(s) = &slot {
            s.release();
        }
        Released(slot)
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.reacquire();
        }
    }
}

/// One call, checked and ready to send.
struct Call {
    name: &'static str,
    method: Method,
    url: Url,
    host: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

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
fn prepare(
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

/// Describes a failed request without its URL: a refusal of the resolver or the redirect
/// policy when there is one, else the causes' texts.
fn describe(host: &str, err: &reqwest::Error) -> Refusal {
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
fn call(
    ctx: &NativeCallContext,
    client: Option<&HttpClient>,
    call: Result<Call, String>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let pos = ctx.call_position();
    let err = |msg: String| super::engine::helper_error(pos, msg);
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
    if super::engine::count_http_call() > client.max_calls {
        return Err(fail(format!(
            "more than [http] max_calls ({}) HTTP calls in one run",
            client.max_calls
        )));
    }
    let own = call.timeout.unwrap_or(client.timeout);
    let (timeout, by_budget) = match super::engine::time_left() {
        Some(left) if left < own => (left, true),
        _ => (own, false),
    };
    if timeout.is_zero() {
        return Err(super::engine::deadline_passed(pos));
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
        Answer::TimedOut if by_budget => Err(super::engine::deadline_passed(pos)),
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

/// The helper error for a refusal: about the called host, or about a redirect target.
fn refusal_error(
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
    super::engine::helper_error(ctx.call_position(), msg)
}

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

    fn policy(entries: &[&str], allow_private: bool) -> Policy {
        Policy {
            entries: entries
                .iter()
                .map(|e| AllowEntry::parse(e).expect(e))
                .collect(),
            allow_private,
        }
    }

    fn check(p: &Policy, url: &str) -> Result<(), String> {
        p.check(&Url::parse(url).expect(url))
            .map_err(|r| r.to_string())
    }

    #[test]
    fn entries_parse_to_host_port_and_scheme() {
        let e = AllowEntry::parse("HTTP://Api.Example.COM:8080").expect("parses");
        assert_eq!(e.host, HostPattern::Name("api.example.com".into()));
        assert_eq!(e.port, Some(8080));
        assert!(e.plain_http);
        let e = AllowEntry::parse("*.corp.example").expect("parses");
        assert_eq!(e.host, HostPattern::Suffix(".corp.example".into()));
        assert_eq!((e.port, e.plain_http), (None, false));
        let e = AllowEntry::parse("[::1]:443").expect("parses");
        assert_eq!(e.host, HostPattern::Ip("::1".parse().expect("ip")));
        assert_eq!(e.port, Some(443));
        let e = AllowEntry::parse("fe80::1").expect("parses");
        assert_eq!(e.host, HostPattern::Ip("fe80::1".parse().expect("ip")));
        assert_eq!(e.port, None);
        let e = AllowEntry::parse("https://10.1.2.3").expect("parses");
        assert_eq!(e.host, HostPattern::Ip("10.1.2.3".parse().expect("ip")));
        for bad in [
            "",
            "*",
            "*.",
            "a/b",
            "u@h",
            "h:",
            "h:x",
            "h:70000",
            "gopher://h",
            "a..b",
            "a_b.c",
            "*.*.c",
            "[::1",
            "[nope]",
        ] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcards_match_subdomains_case_insensitively() {
        let p = policy(&["*.corp.example", "api.example.com:8443"], true);
        assert!(check(&p, "https://a.corp.example/").is_ok());
        assert!(check(&p, "https://A.B.Corp.Example/x").is_ok());
        assert!(check(&p, "https://a.corp.example./").is_ok());
        assert!(check(&p, "https://corp.example/").is_err());
        assert!(check(&p, "https://xcorp.example/").is_err());
        assert!(check(&p, "https://API.example.com:8443/").is_ok());
        assert!(
            check(&p, "https://api.example.com/").is_err(),
            "port 443 is not 8443"
        );
        assert!(check(&p, "https://api.example.com:9443/").is_err());
    }

    #[test]
    fn schemes_userinfo_and_plain_http() {
        let p = policy(&["api.example.com", "http://legacy.example"], true);
        let err = check(&p, "http://api.example.com/").expect_err("plain http");
        assert!(err.contains("plain http is refused"), "{err}");
        assert!(check(&p, "http://legacy.example/").is_ok());
        assert!(check(&p, "https://legacy.example/").is_ok());
        let err = check(&p, "ftp://api.example.com/").expect_err("ftp");
        assert!(err.contains("ftp URLs are refused"), "{err}");
        let err = check(&p, "https://u:secret@api.example.com/").expect_err("userinfo");
        assert!(err.contains("userinfo") && !err.contains("secret"), "{err}");
        assert!(check(&p, "https://u@api.example.com/").is_err());
        // The same name twice: any entry allowing http is enough.
        let p = policy(&["h.example", "http://h.example"], true);
        assert!(check(&p, "http://h.example/").is_ok());
    }

    #[test]
    fn ip_literals_are_checked_unless_allow_private() {
        let p = policy(&["127.0.0.1", "[::1]", "10.0.0.1", "93.184.216.34"], false);
        for url in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://10.0.0.1/",
            "https://2130706433/",
        ] {
            let err = check(&p, url).expect_err(url);
            assert!(
                err.contains("loopback, private or link-local"),
                "{url}: {err}"
            );
        }
        assert!(check(&p, "https://93.184.216.34/").is_ok());
        let p = policy(&["127.0.0.1"], true);
        assert!(check(&p, "https://127.0.0.1:9/").is_ok());
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_private(ip.parse().expect(ip)), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip.parse().expect(ip)), "{ip}");
        }
    }

    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl WaitSlot for Count {
        fn release(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        fn reacquire(&self) {}
    }

    #[test]
    fn the_wait_slot_is_restored_even_on_panic() {
        let outer: Arc<dyn WaitSlot> = Arc::new(Count::default());
        let inner: Arc<dyn WaitSlot> = Arc::new(Count::default());
        let current = || WAIT_SLOT.with(|s| s.borrow().clone());
        with_wait_slot(outer.clone(), || {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_wait_slot(inner.clone(), || {
                    assert!(current().is_some_and(|s| Arc::ptr_eq(&s, &inner)));
                    panic!("boom")
                })
            }));
            assert!(caught.is_err());
            assert!(current().is_some_and(|s| Arc::ptr_eq(&s, &outer)));
        });
        assert!(current().is_none());
    }

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

//! The Auth0 rule templates ported under `examples/auth0-templates/` (index and conventions in
//! its README.md): every template folder's `claimrules test` cases, run by the real binary
//! against local mock services, and the requests those services received.
//!
//! For each template the harness
//! - checks that the committed `rules.toml` is fit for production (https hosts only in
//!   `[http] allow`, no `allow_private`, every URL in `[configuration]` https);
//! - starts one mock server on 127.0.0.1 per host of that `[http] allow` list, answering with
//!   the routes of `tests/fixtures/services.toml` (recorded responses shaped like the real
//!   service's) and recording every request;
//! - copies the folder into a temp dir, rewrites `https://HOST` to the host's mock in
//!   `[configuration]` and in the case files, writes an `[http]` table allowing plain http to
//!   127.0.0.1 (`allow_private`), and runs `claimrules test` with the `[env]` of
//!   `services.toml` (the `configuration_env` secrets; `{HOST}` stands for that host's mock);
//! - asserts the exit code, the printed case count and that the mocks received exactly the
//!   `[[request]]`s of `services.toml`, each as often as it says, and nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/auth0-templates")
}

// ---------------------------------------------------------------------------------------------
// services.toml

/// `tests/fixtures/services.toml` of a template.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Services {
    /// Environment of the `claimrules test` child (the `configuration_env` variables).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// How the mocks answer: the first route whose `when` matches a request wins.
    #[serde(default)]
    route: Vec<Route>,
    /// What the rules must have sent, each `times` times (default 1); nothing else may arrive.
    #[serde(default)]
    request: Vec<Matcher>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    when: Matcher,
    #[serde(default = "ok")]
    status: u16,
    body: Option<String>,
    /// A file under `tests/fixtures/`.
    body_file: Option<String>,
    #[serde(default = "json_type")]
    content_type: String,
}

fn ok() -> u16 {
    200
}

fn json_type() -> String {
    "application/json".into()
}

/// What a request must look like; every field given must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Matcher {
    /// The real service's host (one of the `[http] allow` entries).
    host: String,
    method: Option<String>,
    /// The path as sent (percent-encoding included), without the query.
    path: Option<String>,
    /// Query parameters (decoded) that must have these values.
    #[serde(default)]
    query: BTreeMap<String, String>,
    /// Headers (lower-case names) that must have these values.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// A JSON body containing this (objects: these keys at least; arrays and scalars: equal).
    json: Option<Value>,
    /// `application/x-www-form-urlencoded` fields that must have these values.
    #[serde(default)]
    form: BTreeMap<String, String>,
    /// Form fields whose value is JSON containing this (Slack's `payload=`).
    #[serde(default)]
    form_json: BTreeMap<String, Value>,
    /// Query parameters whose value is base64 of JSON containing this (Mixpanel's `data=`).
    #[serde(default)]
    query_base64_json: BTreeMap<String, Value>,
    /// Text the raw body contains.
    body_contains: Option<String>,
    /// For `[[request]]`: how many requests must match (default 1).
    times: Option<usize>,
}

/// One request a mock received.
#[derive(Debug, Clone)]
struct Seen {
    host: String,
    method: String,
    path: String,
    query: Vec<(String, String)>,
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

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }

    fn describe(&self) -> String {
        let query = if self.query.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("?{}", pairs.join("&"))
        };
        format!(
            "{} {}{}{} headers={:?} body={}",
            self.method,
            self.host,
            self.path,
            query,
            self.headers
                .iter()
                .filter(|(k, _)| k != "host" && k != "content-length")
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// Whether `have` contains `want`: objects by key (recursively), everything else by equality.
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        (h, w) => h == w,
    }
}

fn json_of(text: &[u8]) -> Option<Value> {
    serde_json::from_slice(text).ok()
}

impl Matcher {
    fn matches(&self, r: &Seen) -> bool {
        if self.host != r.host {
            return false;
        }
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(&r.method) {
                return false;
            }
        }
        if self.path.as_ref().is_some_and(|p| p != &r.path) {
            return false;
        }
        if !self.query.iter().all(|(k, v)| r.query(k) == Some(v)) {
            return false;
        }
        if !self.headers.iter().all(|(k, v)| r.header(k) == Some(v)) {
            return false;
        }
        if let Some(want) = &self.json {
            if !json_of(&r.body).is_some_and(|have| contains(&have, want)) {
                return false;
            }
        }
        let form = r.form();
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if !self.form.iter().all(|(k, v)| field(k) == Some(v)) {
            return false;
        }
        for (k, want) in &self.form_json {
            let have = field(k).and_then(|v| json_of(v.as_bytes()));
            if !have.is_some_and(|have| contains(&have, want)) {
                return false;
            }
        }
        for (k, want) in &self.query_base64_json {
            let have = r
                .query(k)
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|bytes| json_of(&bytes));
            if !have.is_some_and(|have| contains(&have, want)) {
                return false;
            }
        }
        if let Some(text) = &self.body_contains {
            if !String::from_utf8_lossy(&r.body).contains(text.as_str()) {
                return false;
            }
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Mock services.

/// The runtime the mock servers run on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("mock runtime")
    })
}

/// An answer the mock gives.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

#[derive(Clone)]
struct MockState {
    host: String,
    routes: Arc<Vec<(Matcher, Answer)>>,
    /// Answers every request with this, whatever the routes say (the outage check).
    outage: Option<Answer>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn serve(
    State(state): State<MockState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        host: state.host.clone(),
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let answer = state.outage.clone().or_else(|| {
        state
            .routes
            .iter()
            .find(|(m, _)| m.matches(&seen))
            .map(|(_, a)| a.clone())
    });
    state.seen.lock().expect("seen").push(seen);
    let answer = answer.unwrap_or(Answer {
        status: 404,
        content_type: "application/json".into(),
        body: r#"{"error":"no route of services.toml matches this request"}"#.into(),
    });
    (
        StatusCode::from_u16(answer.status).expect("status"),
        [("content-type", answer.content_type)],
        answer.body,
    )
        .into_response()
}

/// The mock servers of one template run: one per host, sharing one request log.
struct Mocks {
    /// host → `http://127.0.0.1:PORT`.
    bases: BTreeMap<String, String>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Mocks {
    fn start(hosts: &[String], routes: Vec<(Matcher, Answer)>, outage: Option<Answer>) -> Mocks {
        let routes = Arc::new(routes);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let mut bases = BTreeMap::new();
        for host in hosts {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            let port = listener.local_addr().expect("addr").port();
            let state = MockState {
                host: host.clone(),
                routes: routes.clone(),
                outage: outage.clone(),
                seen: seen.clone(),
            };
            let app = axum::Router::new().fallback(serve).with_state(state);
            let rt = runtime();
            let _enter = rt.enter();
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            rt.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            bases.insert(host.clone(), format!("http://127.0.0.1:{port}"));
        }
        Mocks { bases, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// `text` with every `https://HOST` of a mocked host pointed at its mock.
    fn rewrite(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (host, base) in &self.bases {
            out = out.replace(&format!("https://{host}"), base);
        }
        out
    }

    /// `text` with every `{HOST}` replaced by that host's mock.
    fn expand(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (host, base) in &self.bases {
            out = out.replace(&format!("{{{host}}}"), base);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Running a template.

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn load_services(dir: &Path) -> Services {
    let path = dir.join("tests/fixtures/services.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        Err(_) => Services::default(),
    }
}

/// The committed `[http] allow` hosts, after checking the table is production-shaped.
fn production_hosts(name: &str, manifest: &toml::Table) -> Vec<String> {
    let Some(http) = manifest.get("http").and_then(|h| h.as_table()) else {
        return Vec::new();
    };
    assert!(
        !http
            .get("allow_private")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        "{name}: the committed rules.toml must not set allow_private"
    );
    let allow = http
        .get("allow")
        .and_then(|a| a.as_array())
        .expect("[http] allow");
    allow
        .iter()
        .map(|e| {
            let e = e.as_str().expect("allow entry is a string");
            assert!(
                !e.contains("://") && !e.contains(':') && !e.starts_with("*."),
                "{name}: allow entry {e:?} should be a plain https host name"
            );
            e.to_owned()
        })
        .collect()
}

fn check_configuration_urls(name: &str, value: &toml::Value) {
    match value {
        toml::Value::String(s) if s.contains("://") => {
            assert!(
                s.starts_with("https://"),
                "{name}: configuration URL {s:?} is not https"
            );
        }
        toml::Value::Table(t) => t.values().for_each(|v| check_configuration_urls(name, v)),
        toml::Value::Array(a) => a.iter().for_each(|v| check_configuration_urls(name, v)),
        _ => {}
    }
}

/// One template prepared in a temp dir, its mocks running.
struct Prepared {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    mocks: Mocks,
    services: Services,
    _tmp: tempfile::TempDir,
}

fn prepare(name: &str, outage: Option<Answer>) -> Prepared {
    let source = templates_dir().join(name);
    assert!(source.is_dir(), "{} is not a folder", source.display());
    let manifest_text = std::fs::read_to_string(source.join("rules.toml")).expect("rules.toml");
    let mut manifest: toml::Table = toml::from_str(&manifest_text).expect("rules.toml parses");
    let hosts = production_hosts(name, &manifest);
    if let Some(c) = manifest.get("configuration") {
        check_configuration_urls(name, c);
    }
    let services = load_services(&source);
    let fixtures = source.join("tests/fixtures");
    let routes = services
        .route
        .iter()
        .map(|r| {
            assert!(
                hosts.contains(&r.when.host),
                "{name}: route host {:?} is not in [http] allow",
                r.when.host
            );
            let body = match (&r.body, &r.body_file) {
                (Some(b), None) => b.clone(),
                (None, Some(f)) => std::fs::read_to_string(fixtures.join(f))
                    .unwrap_or_else(|e| panic!("{name}: fixture {f}: {e}")),
                (None, None) => String::new(),
                (Some(_), Some(_)) => panic!("{name}: a route gives body or body_file, not both"),
            };
            let answer = Answer {
                status: r.status,
                content_type: r.content_type.clone(),
                body,
            };
            (r.when.clone(), answer)
        })
        .collect();
    let mocks = Mocks::start(&hosts, routes, outage);

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join(name);
    copy_dir(&source, &dir);
    if let Some(toml::Value::Table(c)) = manifest.get_mut("configuration") {
        for (_, v) in c.iter_mut() {
            if let toml::Value::String(s) = v {
                let rewritten = mocks.rewrite(s.as_str());
                *s = rewritten;
            }
        }
    }
    if !hosts.is_empty() {
        let http = manifest
            .entry("http")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let toml::Value::Table(h) = http {
            h.insert(
                "allow".into(),
                toml::Value::Array(vec![toml::Value::String("http://127.0.0.1".into())]),
            );
            h.insert("allow_private".into(), toml::Value::Boolean(true));
        }
    }
    std::fs::write(
        dir.join("rules.toml"),
        toml::to_string(&manifest).expect("rules.toml serializes"),
    )
    .expect("write rules.toml");
    for entry in std::fs::read_dir(dir.join("tests")).expect("tests/") {
        let path = entry.expect("entry").path();
        let is_case = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "toml" | "json" | "yaml" | "yml"));
        if path.is_file() && is_case {
            let text = std::fs::read_to_string(&path).expect("case file");
            std::fs::write(&path, mocks.rewrite(&text)).expect("write case file");
        }
    }
    let env = services
        .env
        .iter()
        .map(|(k, v)| (k.clone(), mocks.expand(v)))
        .collect();
    Prepared {
        dir,
        env,
        mocks,
        services,
        _tmp: tmp,
    }
}

fn claimrules(p: &Prepared, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .args(args)
        .envs(&p.env)
        .env("NO_COLOR", "1")
        .output()
        .expect("run claimrules")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn summary(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// Every expected request arrived as often as `services.toml` says; nothing else arrived.
fn assert_requests(name: &str, p: &Prepared) {
    let seen = p.mocks.seen();
    let listing = || {
        seen.iter()
            .map(|s| format!("  {}", s.describe()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut problems = Vec::new();
    for want in &p.services.request {
        let n = seen.iter().filter(|s| want.matches(s)).count();
        let times = want.times.unwrap_or(1);
        if n != times {
            problems.push(format!(
                "expected {times} request(s) matching {want:?}, got {n}"
            ));
        }
    }
    for s in &seen {
        if !p.services.request.iter().any(|want| want.matches(s)) {
            problems.push(format!("unexpected request: {}", s.describe()));
        }
    }
    assert!(
        problems.is_empty(),
        "{name}: the mock services disagree:\n{}\nreceived:\n{}",
        problems.join("\n"),
        listing()
    );
}

/// Runs a template's cases against its mocks and checks the case count and the requests.
fn run_template(name: &str, cases: usize) {
    let p = prepare(name, None);
    let dir = p.dir.to_str().expect("utf-8 path").to_owned();
    let out = claimrules(&p, &["test", &dir]);
    assert_eq!(out.status.code(), Some(0), "{name}:\n{}", text(&out));
    assert_eq!(
        summary(&out),
        format!("{cases} passed, 0 failed"),
        "{name}:\n{}",
        text(&out)
    );
    assert_requests(name, &p);
}

macro_rules! templates {
    ($($test:ident: $name:literal, $cases:literal;)*) => {
        $(
            #[test]
            fn $test() {
                run_template($name, $cases);
            }
        )*

        /// Every template folder has a test above, and an entry in the index.
        #[test]
        fn every_template_folder_is_tested_and_indexed() {
            let tested = [$($name),*];
            let index = std::fs::read_to_string(templates_dir().join("README.md"))
                .expect("examples/auth0-templates/README.md");
            let mut found = Vec::new();
            for entry in std::fs::read_dir(templates_dir()).expect("templates dir") {
                let entry = entry.expect("entry");
                if entry.file_type().expect("type").is_dir() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    assert!(tested.contains(&name.as_str()), "{name} has no test in {}", file!());
                    assert!(
                        index.contains(&format!("[{name}]")),
                        "{name} is missing from examples/auth0-templates/README.md"
                    );
                    found.push(name);
                }
            }
            assert_eq!(found.len(), tested.len(), "a tested template folder is missing");
        }
    };
}

templates! {
    get_fullcontact_profile: "get-fullcontact-profile", 9;
    slack: "slack", 10;
    add_persistence_attribute: "add-persistence-attribute", 4;
    roles_creation: "roles-creation", 7;
    zendesk_sso_jwt: "zendesk-sso-jwt", 3;
    pusher: "pusher", 5;
    jwt: "jwt", 5;
    mixpanel_track_event: "mixpanel-track-event", 4;
    send_events_segmentio: "send-events-segmentio", 5;
    splunk_hec_track_event: "splunk-HEC-track-event", 5;
    send_events_keenio: "send-events-keenio", 5;
    sendgrid: "sendgrid", 5;
    socure_fraudscore: "socure-fraudscore", 7;
    create_new_contact_add_to_contact_list_hubspot: "create-new-contact-add-to-contact-list-hubspot", 5;
    scaled_access_relationships_claim: "scaled-access-relationships-claim", 8;
    dropbox_whitelist: "dropbox-whitelist", 8;
    alt_risk_score: "alt-risk-score", 7;
}

// ---------------------------------------------------------------------------------------------
// The cases catch a broken API, each the way its template handles one.

/// Every request the mocks of `name` get is answered with `status` and `body`.
fn outage(name: &str, status: u16, body: &str) -> (Prepared, Output) {
    let answer = Answer {
        status,
        content_type: "application/json".into(),
        body: body.into(),
    };
    let p = prepare(name, Some(answer));
    let dir = p.dir.to_str().expect("utf-8 path").to_owned();
    let out = claimrules(&p, &["test", &dir]);
    (p, out)
}

#[test]
fn a_splunk_outage_fails_the_logins_with_invalid_operation() {
    let (p, out) = outage(
        "splunk-HEC-track-event",
        500,
        r#"{"text":"Internal server error","code":8}"#,
    );
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    // The two logins the collector took are now denied; the refused and busy cases are denied
    // too, but fail on the status they expected to be logged; only the unreachable case passes.
    assert_eq!(summary(&out), "1 passed, 4 failed", "{report}");
    for failed in [
        "a first login is sent as SignUp and marks the user signed up",
        "a signed-up user's login is sent as Login",
        "a refused token (403) fails the login with Invalid operation and saves nothing",
        "a busy collector (503) fails the login with Invalid operation",
    ] {
        assert!(
            report.contains(&format!("FAIL  splunk.toml: {failed}")),
            "{report}"
        );
    }
    assert!(
        report.contains("expected success, but the run was denied"),
        "{report}"
    );
    assert!(
        report.contains("no log line contains \"Splunk HEC answered 403"),
        "{report}"
    );
    assert!(
        report.contains("denied access: Invalid operation"),
        "{report}"
    );
    assert!(
        report.contains("Splunk HEC answered 500: Internal server error"),
        "{report}"
    );
    assert_eq!(p.mocks.seen().len(), 4, "the same four events were posted");
}

#[test]
fn a_fullcontact_outage_only_loses_the_profile() {
    let (p, out) = outage(
        "get-fullcontact-profile",
        500,
        r#"{"status":500,"message":"Internal server error"}"#,
    );
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    // The template swallows API errors: every login still succeeds. The case expecting the
    // profile fails on the missing claim and metadata, the 404, 202 and not-JSON cases on the
    // outcome they expected to be logged.
    assert_eq!(summary(&out), "5 passed, 4 failed", "{report}");
    for failed in [
        "a found profile is stored in user_metadata and returned without its details",
        "no match (404) leaves the profile alone",
        "a profile queued for search (202) is not stored yet",
        "a body that is not JSON is logged and skipped",
    ] {
        assert!(
            report.contains(&format!("FAIL  fullcontact.toml: {failed}")),
            "{report}"
        );
    }
    assert!(
        report.contains("https://example.com/fullcontact"),
        "{report}"
    );
    assert!(
        report.contains("FullContact answered 500: Internal server error"),
        "{report}"
    );
    assert!(!report.contains("denied access"), "{report}");
    assert!(!report.contains("expected success"), "{report}");
    assert_eq!(p.mocks.seen().len(), 5, "the same five lookups were made");
}

// ---------------------------------------------------------------------------------------------
// What the cases cannot check.

/// The Zendesk URL's token has a random `jti`, so no case can spell it out: run the rule once
/// with `claimrules run` and verify the token as Zendesk does (HS256 with the shared secret;
/// iat, jti, email, name, external_id; https://support.zendesk.com/hc/en-us/articles/203663816).
#[test]
fn zendesk_accepts_the_sso_jwt() {
    let p = prepare("zendesk-sso-jwt", None);
    let user = p.dir.join("user.json");
    std::fs::write(
        &user,
        r#"{"user_id":"auth0|jane","email":"jane@example.com","name":"Jane Doe"}"#,
    )
    .expect("user.json");
    let dir = p.dir.to_str().expect("utf-8 path").to_owned();
    let user = user.to_str().expect("utf-8 path").to_owned();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let out = claimrules(&p, &["run", "--user", &user, &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let outcome: Value = serde_json::from_slice(&out.stdout).expect("outcome JSON");
    let link = outcome["id_token"]["https://example.com/zendesk_jwt_url"]
        .as_str()
        .expect("the URL claim");
    let link = url::Url::parse(link).expect("a URL");
    assert_eq!(link.scheme(), "https");
    assert_eq!(link.host_str(), Some("auth0sso.zendesk.com"));
    assert_eq!(link.path(), "/access/jwt");
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "jwt")
        .map(|(_, v)| v.into_owned())
        .expect("a jwt parameter");

    let secret = &p.env["ZENDESK_JWT_SECRET"];
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let decoded = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .expect("signed with the shared secret");
    let claims = decoded.claims;
    assert_eq!(claims["email"], "jane@example.com");
    assert_eq!(claims["name"], "Jane Doe");
    assert_eq!(claims["external_id"], "auth0|jane");
    let iat = claims["iat"].as_u64().expect("iat in seconds");
    assert!(
        (before..=before + 60).contains(&iat),
        "iat {iat} is not now ({before})"
    );
    let jti = claims["jti"].as_str().expect("jti");
    assert_eq!(jti.len(), 36, "a UUID: {jti}");
    assert_eq!(claims.as_object().map(|m| m.len()), Some(5), "{claims}");

    let wrong = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(b"another secret"),
        &validation,
    );
    assert!(wrong.is_err(), "another secret must not verify it");

    // A second login gets another jti: Zendesk refuses a replayed one.
    let again = claimrules(&p, &["run", "--user", &user, &dir]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_ne!(out.stdout, again.stdout);
}

/// slack and send-events-keenio each carry the same port of slack-notify in their lib/ (a
/// rules folder imports from its own lib/ only): the copies must not drift apart.
#[test]
fn the_slack_notify_copies_are_identical() {
    let read = |name: &str| {
        std::fs::read_to_string(templates_dir().join(name).join("lib/slack_notify.rhai"))
            .expect("slack_notify.rhai")
    };
    assert_eq!(read("slack"), read("send-events-keenio"));
}

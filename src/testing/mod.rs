//! Rule unit tests: case files in `RULES_DIR/tests/` (TOML, JSON or YAML), each case an input
//! user and context plus what the rules must produce; a runner that checks them against a
//! [`RuleSet`], and reporters (text with diffs, JSON, JUnit XML).
//!
//! From Rust, load a folder's suite with [`TestSuite::load`], or write a case inline with the
//! [`Case`] builder:
//!
//! ```
//! use claimrules::rules::RuleSet;
//! use claimrules::testing::Case;
//! use serde_json::json;
//!
//! let set = RuleSet::from_sources(
//!     vec![("roles".into(), r#"
//!         context.accessToken["https://example.com/roles"] = user.app_metadata.roles;
//!         if user.email_verified != true { deny("verify your email"); }
//!     "#.into())],
//!     json!({}),
//!     Default::default(),
//! ).unwrap();
//!
//! Case::new("admins get their roles")
//!     .user(json!({"user_id": "auth0|1", "email_verified": true,
//!                  "app_metadata": {"roles": ["admin"]}}))
//!     .expect_access_claim("https://example.com/roles", json!(["admin"]))
//!     .expect_absent("https://example.com/plan")
//!     .run(&set)
//!     .assert_passed();
//!
//! let result = Case::new("unverified users are denied")
//!     .user(json!({"user_id": "auth0|2", "email_verified": false, "app_metadata": {}}))
//!     .expect_denied_with("verify")
//!     .run(&set);
//! assert!(result.passed(), "{}", result.render(false));
//! ```

mod case_file;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::claims::{NamespacePolicy, TokenKind};
use crate::model::Context;
use crate::rules::coverage::{self, Hits};
use crate::rules::sites::{DenyKind, DenySite};
use crate::rules::{
    LoadError, Outcome, RuleError, RuleLog, RuleSet, RuleSetOptions, RunOptions, Warning,
};

pub use report::{color_enabled, render_json, render_junit, render_lcov, render_text};

/// Errors of loading a test suite. Each stops the run before any case runs (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The rules folder did not load (compile error, bad `rules.toml`, not a folder).
    #[error("the rules did not load: {0}")]
    Rules(#[from] LoadError),
    /// The tests folder is missing or holds no case file.
    #[error("no test cases: {} holds no .toml, .json or .yaml case file", .0.display())]
    NoTests(PathBuf),
    /// A file could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A case file is invalid.
    #[error("{}", describe_invalid(path, *line, *column, key, message))]
    Invalid {
        /// The case file.
        path: PathBuf,
        /// 1-based line (0 when the parser gave none).
        line: usize,
        /// 1-based column (0 when the parser gave none).
        column: usize,
        /// The key, as a path such as `case[0].expect.denied` (empty for a syntax error).
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn describe_invalid(path: &Path, line: usize, column: usize, key: &str, message: &str) -> String {
    if key.is_empty() {
        format!(
            "{}:{line}:{column}: syntax error: {message}",
            path.display()
        )
    } else {
        format!("{}:{line}:{column}: key `{key}`: {message}", path.display())
    }
}

/// How the runner treats a claim the namespace rule drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// A dropped claim fails the case (naming rule and key) unless the case expects the warning.
    #[default]
    Strict,
    /// Dropped claims are only warnings, as on the server with `namespace_policy = "drop"`.
    Drop,
}

impl std::str::FromStr for NamespaceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(NamespaceMode::Strict),
            "drop" => Ok(NamespaceMode::Drop),
            other => Err(format!(
                "unknown namespace policy {other:?} (strict | drop)"
            )),
        }
    }
}

/// What a case expects of a denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Denied {
    /// Any denial (`denied = true`).
    Any,
    /// A denial whose message contains this text.
    Message(String),
}

/// The `expect` table of a case.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Expect {
    /// Access-token claims that must be present with these values.
    pub access_token: Option<Map<String, Value>>,
    /// ID-token claims that must be present with these values.
    pub id_token: Option<Map<String, Value>>,
    /// When true, each token table given must match the token's whole claim set.
    pub exact: bool,
    /// Claim keys that must be in neither token.
    pub absent: Vec<String>,
    /// The final access-token scope (order-insensitive).
    pub scope: Option<Vec<String>>,
    /// The run must be denied.
    pub denied: Option<Denied>,
    /// The run must fail with a rule error containing this text.
    pub error: Option<String>,
    /// Texts that must each appear in some log line.
    pub logs: Vec<String>,
    /// Texts that must each appear in some namespace warning.
    pub warnings: Vec<String>,
    /// Keys the run's `update_app_metadata` calls must have set to these values (checked after
    /// a denial too, since those updates persist); an empty map: no update at all.
    pub app_metadata: Option<Map<String, Value>>,
    /// The same for `update_user_metadata`.
    pub user_metadata: Option<Map<String, Value>>,
    /// Fields the user must have after the run, by key: a key is a field name or a dotted path
    /// (`"app_metadata.plan"`); a table value checks the fields it lists, any other value
    /// (arrays included) must be equal; `null` means absent.
    pub user: Option<Map<String, Value>>,
    /// Fields (names or dotted paths) the user must not have after the run (TOML has no
    /// `null`; this is `expect.user` with `null` values).
    pub user_absent: Vec<String>,
}

/// One test case: inputs and expectations. Built by case files or by the builder methods.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    /// The case's name.
    pub name: String,
    /// The case file it came from.
    pub file: Option<PathBuf>,
    /// The line of its `name` in that file.
    pub line: Option<usize>,
    /// The input user.
    pub user: Value,
    /// The input context, merged deeply over [`default_context`] (objects merge, arrays and
    /// other values replace); `None` uses the default as is.
    pub context: Option<Value>,
    /// Keys merged over the rule set's configuration.
    pub configuration: Option<Map<String, Value>>,
    /// Pins the rules' clock (`now()`) to these unix seconds.
    pub now: Option<i64>,
    /// Runs only these rules (in set order).
    pub rules: Option<Vec<String>>,
    /// What the run must produce.
    pub expect: Expect,
}

/// The context a case runs with when it gives none: [`Context::default`], the same fields the
/// token server fills for a login. A case's own context is merged over it with [`merge_deep`].
pub fn default_context() -> Map<String, Value> {
    Context::default().into()
}

/// Merges `over` into `base`: where both are objects, key by key (recursively); anywhere else
/// (arrays, strings, numbers, `null`) `over` replaces `base`.
pub fn merge_deep(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge_deep(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// The context a case runs with: the default (its authentication time at `now` when the case
/// pins the clock) with the case's context merged deeply over it. Public so that tools which
/// record cases (`claimrules playground`) run inputs exactly as the runner will.
pub fn case_context(given: Option<&Value>, now: Option<i64>) -> Map<String, Value> {
    let mut context = Context::default();
    if let Some(now) = now {
        context = context.authentication_methods([("pwd", now)]);
    }
    let mut context = Value::from(context);
    if let Some(given) = given {
        merge_deep(&mut context, given);
    }
    match context {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Case {
    /// A case with an empty user, the default context and no expectations (it passes when the
    /// run succeeds without unexpected namespace warnings).
    pub fn new(name: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            file: None,
            line: None,
            user: Value::Object(Map::new()),
            context: None,
            configuration: None,
            now: None,
            rules: None,
            expect: Expect::default(),
        }
    }

    /// Sets the input user.
    pub fn user(mut self, user: Value) -> Case {
        self.user = user;
        self
    }

    /// Sets the input context (merged deeply over [`default_context`]).
    pub fn context(mut self, context: Value) -> Case {
        self.context = Some(context);
        self
    }

    /// Merges these keys over the rule set's configuration (`value` must be an object).
    pub fn configuration(mut self, value: Value) -> Case {
        if let Value::Object(m) = value {
            self.configuration = Some(m);
        }
        self
    }

    /// Pins the rules' clock to `unix_seconds`.
    pub fn now(mut self, unix_seconds: i64) -> Case {
        self.now = Some(unix_seconds);
        self
    }

    /// Runs only these rules.
    pub fn rules<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Case {
        self.rules = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Expects the access token to carry `key` with `value`.
    pub fn expect_access_claim(mut self, key: impl Into<String>, value: Value) -> Case {
        self.expect
            .access_token
            .get_or_insert_with(Map::new)
            .insert(key.into(), value);
        self
    }

    /// Expects the ID token to carry `key` with `value`.
    pub fn expect_id_claim(mut self, key: impl Into<String>, value: Value) -> Case {
        self.expect
            .id_token
            .get_or_insert_with(Map::new)
            .insert(key.into(), value);
        self
    }

    /// Expects each token given to carry exactly the expected claims, no more.
    pub fn expect_exact(mut self) -> Case {
        self.expect.exact = true;
        self
    }

    /// Expects neither token to carry `key`.
    pub fn expect_absent(mut self, key: impl Into<String>) -> Case {
        self.expect.absent.push(key.into());
        self
    }

    /// Expects this final access-token scope (order-insensitive).
    pub fn expect_scope<S: Into<String>>(mut self, scope: impl IntoIterator<Item = S>) -> Case {
        self.expect.scope = Some(scope.into_iter().map(Into::into).collect());
        self
    }

    /// Expects the run to be denied.
    pub fn expect_denied(mut self) -> Case {
        self.expect.denied = Some(Denied::Any);
        self
    }

    /// Expects the run to be denied with a message containing `text`.
    pub fn expect_denied_with(mut self, text: impl Into<String>) -> Case {
        self.expect.denied = Some(Denied::Message(text.into()));
        self
    }

    /// Expects the run to fail with a rule error containing `text`.
    pub fn expect_error(mut self, text: impl Into<String>) -> Case {
        self.expect.error = Some(text.into());
        self
    }

    /// Expects some log line to contain `text`.
    pub fn expect_log(mut self, text: impl Into<String>) -> Case {
        self.expect.logs.push(text.into());
        self
    }

    /// Expects the user, after the run, to have `value` at `path` (a field or a dotted path
    /// such as `app_metadata.plan`; see [`Expect::user`]).
    pub fn expect_user(mut self, path: impl Into<String>, value: Value) -> Case {
        self.expect
            .user
            .get_or_insert_with(Map::new)
            .insert(path.into(), value);
        self
    }

    /// Expects some namespace warning to contain `text` (e.g. the dropped key).
    pub fn expect_warning(mut self, text: impl Into<String>) -> Case {
        self.expect.warnings.push(text.into());
        self
    }

    /// Runs the case in strict namespace mode.
    pub fn run(&self, set: &RuleSet) -> CaseResult {
        self.run_with(set, NamespaceMode::Strict)
    }

    /// Runs the case against `set` and checks every expectation.
    pub fn run_with(&self, set: &RuleSet, mode: NamespaceMode) -> CaseResult {
        let context = case_context(self.context.as_ref(), self.now);
        let opts = RunOptions {
            now: self.now,
            configuration: self.configuration.clone(),
            only: self.rules.clone(),
            // Always drop at run time: strict mode fails the case afterwards, so a case may
            // still expect the warning instead of stopping at the first refused claim.
            namespace_policy: Some(NamespacePolicy::Drop),
        };
        let requested = requested_scope(&context);
        let started = Instant::now();
        let (trace, hits) =
            coverage::collect(|| set.run_with(self.user.clone(), Value::Object(context), &opts));
        let duration = started.elapsed();
        let mut failures = self.check(&trace.result, &trace.logs, requested, mode);
        self.check_metadata(&trace.metadata, &mut failures);
        let (outcome, error) = match trace.result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        let error_source = error.as_ref().and_then(|e| source_line(set, e));
        CaseResult {
            name: self.name.clone(),
            file: self.file.clone(),
            line: self.line,
            duration,
            failures,
            rules_run: trace.rules_run,
            logs: trace.logs,
            error,
            error_source,
            outcome,
            hits,
        }
    }

    fn check(
        &self,
        result: &Result<Outcome, RuleError>,
        logs: &[RuleLog],
        requested: Option<Vec<String>>,
        mode: NamespaceMode,
    ) -> Vec<Failure> {
        let e = &self.expect;
        let mut failures = Vec::new();
        match (result, &e.denied, &e.error) {
            (Err(RuleError::Denied { rule, message }), Some(want), _) => {
                if let Denied::Message(text) = want {
                    if !message.contains(text.as_str()) {
                        failures.push(Failure::DenialMessage {
                            rule: rule.clone(),
                            expected: text.clone(),
                            actual: message.clone(),
                        });
                    }
                }
            }
            (Err(err), Some(want), _) => failures.push(Failure::WrongFailure {
                expected: format!("a denial{}", denied_suffix(want)),
                actual: err.clone(),
            }),
            (Ok(_), Some(want), _) => failures.push(Failure::NotFailed {
                expected: format!("a denial{}", denied_suffix(want)),
            }),
            (Err(err @ RuleError::Denied { .. }), None, Some(text)) => {
                failures.push(Failure::WrongFailure {
                    expected: format!("a rule error containing {text:?}"),
                    actual: err.clone(),
                })
            }
            (Err(err), None, Some(text)) => {
                if !err.to_string().contains(text.as_str()) {
                    failures.push(Failure::WrongFailure {
                        expected: format!("a rule error containing {text:?}"),
                        actual: err.clone(),
                    });
                }
            }
            (Ok(_), None, Some(text)) => failures.push(Failure::NotFailed {
                expected: format!("a rule error containing {text:?}"),
            }),
            (Err(err), None, None) => failures.push(Failure::Unexpected { error: err.clone() }),
            (Ok(out), None, None) => self.check_outcome(out, requested, mode, &mut failures),
        }
        for text in &e.logs {
            let found = logs
                .iter()
                .any(|l| l.lines.iter().any(|line| line.contains(text.as_str())));
            if !found {
                failures.push(Failure::MissingLog {
                    expected: text.clone(),
                });
            }
        }
        failures
    }

    fn check_metadata(&self, got: &crate::rules::MetadataUpdates, failures: &mut Vec<Failure>) {
        let e = &self.expect;
        for (field, expected, actual) in [
            ("app_metadata", &e.app_metadata, &got.app_metadata),
            ("user_metadata", &e.user_metadata, &got.user_metadata),
        ] {
            let Some(expected) = expected else { continue };
            let empty = Map::new();
            let actual = actual.as_ref().unwrap_or(&empty);
            if expected.is_empty() && !actual.is_empty() {
                failures.push(Failure::Metadata {
                    field,
                    key: None,
                    expected: Value::Object(Map::new()),
                    actual: Some(Value::Object(actual.clone())),
                });
            }
            for (key, want) in expected {
                let have = actual.get(key);
                if have != Some(want) {
                    failures.push(Failure::Metadata {
                        field,
                        key: Some(key.clone()),
                        expected: want.clone(),
                        actual: have.cloned(),
                    });
                }
            }
            if e.exact {
                for (key, have) in actual {
                    if !expected.contains_key(key) {
                        failures.push(Failure::Metadata {
                            field,
                            key: Some(key.clone()),
                            expected: Value::Null,
                            actual: Some(have.clone()),
                        });
                    }
                }
            }
        }
    }

    fn check_outcome(
        &self,
        out: &Outcome,
        requested: Option<Vec<String>>,
        mode: NamespaceMode,
        failures: &mut Vec<Failure>,
    ) {
        let e = &self.expect;
        for (token, expected, actual) in [
            (TokenKind::AccessToken, &e.access_token, &out.access_token),
            (TokenKind::IdToken, &e.id_token, &out.id_token),
        ] {
            let Some(expected) = expected else { continue };
            for (key, want) in expected {
                let got = actual.get(key);
                if got != Some(want) {
                    failures.push(Failure::Claim {
                        token,
                        key: key.clone(),
                        expected: want.clone(),
                        actual: got.cloned(),
                    });
                }
            }
            if e.exact {
                for (key, got) in actual {
                    if !expected.contains_key(key) {
                        failures.push(Failure::UnexpectedClaim {
                            token,
                            key: key.clone(),
                            actual: got.clone(),
                        });
                    }
                }
            }
        }
        for key in &e.absent {
            for (token, map) in [
                (TokenKind::AccessToken, &out.access_token),
                (TokenKind::IdToken, &out.id_token),
            ] {
                if let Some(v) = map.get(key) {
                    failures.push(Failure::PresentClaim {
                        token,
                        key: key.clone(),
                        actual: v.clone(),
                    });
                }
            }
        }
        if let Some(want) = &e.scope {
            let got = out.scope.clone().or(requested);
            let norm = |v: &[String]| {
                let mut v = v.to_vec();
                v.sort();
                v.dedup();
                v
            };
            if got.as_deref().map(norm) != Some(norm(want)) {
                failures.push(Failure::Scope {
                    expected: want.clone(),
                    actual: got,
                });
            }
        }
        if let Some(want) = &e.user {
            check_user(want, &out.user, "", failures);
        }
        let absent: Map<String, Value> = e
            .user_absent
            .iter()
            .map(|k| (k.clone(), Value::Null))
            .collect();
        check_user(&absent, &out.user, "", failures);
        for text in &e.warnings {
            if !out
                .warnings
                .iter()
                .any(|w| w.to_string().contains(text.as_str()))
            {
                failures.push(Failure::MissingWarning {
                    expected: text.clone(),
                });
            }
        }
        if mode == NamespaceMode::Strict {
            for w in &out.warnings {
                let text = w.to_string();
                if !e.warnings.iter().any(|want| text.contains(want.as_str())) {
                    failures.push(Failure::DroppedClaim(w.clone()));
                }
            }
        }
    }
}

/// The field of `value` at `key`: the key as it is, else as a dotted path.
fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(v) = value.get(key) {
        return Some(v);
    }
    if !key.contains('.') {
        return None;
    }
    key.split('.').try_fold(value, |v, part| v.get(part))
}

/// Checks `expect.user`: each key's value, recursing into tables (see [`Expect::user`]).
fn check_user(
    want: &Map<String, Value>,
    actual: &Value,
    prefix: &str,
    failures: &mut Vec<Failure>,
) {
    for (key, expected) in want {
        let path = format!("{prefix}{key}");
        let got = field(actual, key).filter(|v| !v.is_null());
        match (expected, got) {
            (Value::Object(inner), Some(got @ Value::Object(_))) if !inner.is_empty() => {
                check_user(inner, got, &format!("{path}."), failures);
            }
            (Value::Null, None) => {}
            (expected, got) if got == Some(expected) => {}
            (expected, got) => failures.push(Failure::User {
                path,
                expected: expected.clone(),
                actual: got.cloned(),
            }),
        }
    }
}

fn denied_suffix(d: &Denied) -> String {
    match d {
        Denied::Any => String::new(),
        Denied::Message(m) => format!(" with a message containing {m:?}"),
    }
}

/// The scope the app asked for (authorize query, else refresh body): what the token gets when
/// no rule rewrites it.
pub fn requested_scope(context: &Map<String, Value>) -> Option<Vec<String>> {
    let request = context.get("request")?;
    ["query", "body"].iter().find_map(|part| {
        request
            .get(part)?
            .get("scope")?
            .as_str()
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
    })
}

/// The source line a script error points at, for the failure report.
fn source_line(set: &RuleSet, err: &RuleError) -> Option<String> {
    let line = match err {
        RuleError::Script { line, .. } | RuleError::Timeout { line, .. } => *line,
        _ => return None,
    };
    let rule = set.rules().iter().find(|r| Some(r.name()) == err.rule())?;
    rule.source()
        .lines()
        .nth(line.checked_sub(1)?)
        .map(|l| format!("{line} | {}", l.trim_end()))
}

/// Why a case failed; each names what was expected and what happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// An expected claim is missing or has another value.
    Claim {
        /// The token.
        token: TokenKind,
        /// The claim key.
        key: String,
        /// The expected value.
        expected: Value,
        /// The actual value (`None`: not in the token).
        actual: Option<Value>,
    },
    /// Under `exact = true`, a claim the case did not list.
    UnexpectedClaim {
        /// The token.
        token: TokenKind,
        /// The claim key.
        key: String,
        /// Its value.
        actual: Value,
    },
    /// A claim listed in `absent` is present.
    PresentClaim {
        /// The token.
        token: TokenKind,
        /// The claim key.
        key: String,
        /// Its value.
        actual: Value,
    },
    /// The final scope differs.
    Scope {
        /// The expected scope.
        expected: Vec<String>,
        /// The actual scope (`None`: no rule set one and none was requested).
        actual: Option<Vec<String>>,
    },
    /// The case expected a failure (denial or error) but the run succeeded.
    NotFailed {
        /// What was expected.
        expected: String,
    },
    /// The run was denied, with another message.
    DenialMessage {
        /// The denying rule.
        rule: String,
        /// The expected text.
        expected: String,
        /// The denial's message.
        actual: String,
    },
    /// The run failed, but not the way the case expected.
    WrongFailure {
        /// What was expected.
        expected: String,
        /// The error.
        #[serde(serialize_with = "display")]
        actual: RuleError,
    },
    /// The run failed though the case expected success.
    Unexpected {
        /// The error.
        #[serde(serialize_with = "display")]
        error: RuleError,
    },
    /// No log line contains this text.
    MissingLog {
        /// The expected text.
        expected: String,
    },
    /// No namespace warning contains this text.
    MissingWarning {
        /// The expected text.
        expected: String,
    },
    /// Strict mode: the namespace rule dropped a claim the case did not expect to lose.
    DroppedClaim(Warning),
    /// A field of the user after the run differs from `expect.user`.
    User {
        /// The field, as a dotted path.
        path: String,
        /// The expected value (`null`: absent).
        expected: Value,
        /// The value after the run (`None`: absent).
        actual: Option<Value>,
    },
    /// A metadata update differs from `expect.app_metadata` / `expect.user_metadata`.
    Metadata {
        /// `app_metadata` or `user_metadata`.
        field: &'static str,
        /// The key (`None`: the case expected no update at all).
        key: Option<String>,
        /// The expected value (`null` for a key the case did not list under `exact`).
        expected: Value,
        /// What the rules set (`None`: not updated).
        actual: Option<Value>,
    },
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Its case file.
    pub file: Option<PathBuf>,
    /// The line of its `name`.
    pub line: Option<usize>,
    /// How long the pipeline run took.
    pub duration: Duration,
    /// Every unmet expectation; empty when the case passed.
    pub failures: Vec<Failure>,
    /// Rules that started, in order.
    pub rules_run: Vec<String>,
    /// Log lines of each rule that ran.
    pub logs: Vec<RuleLog>,
    /// The run's error (a denial included).
    pub error: Option<RuleError>,
    /// `LINE | source` of the rule line a script error points at.
    pub error_source: Option<String>,
    /// The outcome of a successful run.
    pub outcome: Option<Outcome>,
    /// What the rules reached (empty unless the set records coverage).
    pub hits: Hits,
}

impl CaseResult {
    /// True when every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The runner's text for this case (status line, and for a failure the diff, logs and
    /// error), with ANSI colors when `color` is set.
    pub fn render(&self, color: bool) -> String {
        report::render_case(self, color)
    }

    /// Panics with the rendered diff unless the case passed (for `cargo test`).
    ///
    /// # Panics
    /// When any expectation did not hold.
    pub fn assert_passed(&self) {
        if !self.passed() {
            panic!("{}", self.render(false));
        }
    }
}

/// A case a filter left out.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedCase {
    /// Its name.
    pub name: String,
    /// Its file.
    pub file: Option<PathBuf>,
}

/// Rules the cases did not exercise, and the per-rule line table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Enabled rules no case ran.
    pub unexercised: Vec<String>,
    /// Rules with a `deny` call or a `throw` statement that no case reached.
    pub denial_untested: Vec<String>,
    /// Each enabled rule: the cases that ran it, its lines and its `deny`/`throw` sites.
    pub rules: Vec<RuleCoverage>,
}

/// The coverage of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCoverage {
    /// The rule.
    pub rule: String,
    /// Its file.
    pub file: PathBuf,
    /// How many cases ran it.
    pub cases: usize,
    /// Each line that holds a statement, with how many times statements on it ran (empty when
    /// the set was built without [`RuleSetOptions::coverage`]).
    pub lines: Vec<LineHits>,
    /// Its `deny` calls and `throw` statements, and whether a case reached each.
    pub sites: Vec<SiteCoverage>,
}

/// How many times the statements of one line ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineHits {
    /// 1-based line.
    pub line: usize,
    /// Statements run on it, over all cases.
    pub hits: u64,
}

/// A `deny` or `throw` site and whether a case reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SiteCoverage {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// `deny` or `throw`.
    pub kind: DenyKind,
    /// Whether some case reached it.
    pub fired: bool,
}

impl Coverage {
    /// Computes the coverage of the rules of `set` over the results of a run. With a set built
    /// with [`RuleSetOptions::coverage`], a site counts as fired when a case reached its exact
    /// position; without, when the rule denied in some case.
    pub fn compute(set: &RuleSet, results: &[CaseResult]) -> Coverage {
        let mut hits = Hits::default();
        for r in results {
            hits.merge(&r.hits);
        }
        let positions = set.options().coverage;
        let mut cov = Coverage::default();
        for rule in set.rules().iter().filter(|r| r.enabled()) {
            let name = rule.name();
            let cases = results
                .iter()
                .filter(|r| r.rules_run.iter().any(|n| n == name))
                .count();
            if cases == 0 {
                cov.unexercised.push(name.to_owned());
            }
            let denied = results
                .iter()
                .any(|r| matches!(&r.error, Some(RuleError::Denied { rule, .. }) if rule == name));
            let sites: Vec<SiteCoverage> = rule
                .deny_sites()
                .into_iter()
                .map(|DenySite { line, column, kind }| SiteCoverage {
                    line,
                    column,
                    kind,
                    fired: if positions {
                        hits.reached(name, line, column)
                    } else {
                        denied
                    },
                })
                .collect();
            if sites.iter().any(|s| !s.fired) {
                cov.denial_untested.push(name.to_owned());
            }
            let lines = if positions {
                // A line ran as many times as the statement on it that ran most.
                let mut lines: std::collections::BTreeMap<usize, u64> = Default::default();
                for (line, column) in rule.statement_positions() {
                    let slot = lines.entry(line).or_default();
                    *slot = (*slot).max(hits.count(name, line, column));
                }
                lines
                    .into_iter()
                    .map(|(line, hits)| LineHits { line, hits })
                    .collect()
            } else {
                Vec::new()
            };
            cov.rules.push(RuleCoverage {
                rule: name.to_owned(),
                file: rule.path().to_path_buf(),
                cases,
                lines,
                sites,
            });
        }
        cov
    }

    /// True when there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.unexercised.is_empty() && self.denial_untested.is_empty()
    }

    /// The `deny`/`throw` sites of `rule` no case reached.
    pub fn untested_sites(&self, rule: &str) -> Vec<SiteCoverage> {
        self.rules
            .iter()
            .filter(|r| r.rule == rule)
            .flat_map(|r| r.sites.iter().filter(|s| !s.fired).copied())
            .collect()
    }
}

/// The results of running a suite.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    /// The cases that ran, in file and case order.
    pub results: Vec<CaseResult>,
    /// Cases the filter left out.
    pub skipped: Vec<SkippedCase>,
    /// The coverage hint.
    pub coverage: Coverage,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
}

impl SuiteReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Cases the filter skipped.
    pub fn skipped(&self) -> usize {
        self.skipped.len()
    }

    /// True when no case failed.
    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    /// `N passed, N failed` plus `, N skipped` when a filter skipped some.
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed(), self.failed());
        if self.skipped() > 0 {
            s.push_str(&format!(", {} skipped", self.skipped()));
        }
        s
    }
}

/// Options of a suite run.
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Runs only cases whose name or file name contains this text.
    pub filter: Option<String>,
    /// Strict (default) or drop namespace handling.
    pub namespace: NamespaceMode,
}

/// A rules folder's compiled rules and the cases of its `tests/` folder.
#[derive(Debug)]
pub struct TestSuite {
    set: RuleSet,
    cases: Vec<Case>,
}

impl TestSuite {
    /// Loads the rules in `dir` (recording coverage) and the cases in `dir/tests/`.
    pub fn load(dir: impl AsRef<Path>) -> Result<TestSuite, TestError> {
        let dir = dir.as_ref();
        let options = RuleSetOptions {
            coverage: true,
            ..Default::default()
        };
        let set = RuleSet::load_with(dir, options)?;
        Self::with_rules(set, &dir.join("tests"))
    }

    /// Uses an already built rule set and the case files in `tests_dir`.
    pub fn with_rules(set: RuleSet, tests_dir: &Path) -> Result<TestSuite, TestError> {
        let entries = std::fs::read_dir(tests_dir)
            .map_err(|_| TestError::NoTests(tests_dir.to_path_buf()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && case_file::is_case_file(p))
            .collect();
        if files.is_empty() {
            return Err(TestError::NoTests(tests_dir.to_path_buf()));
        }
        files.sort();
        let known: Vec<String> = set
            .rules()
            .iter()
            .filter(|r| r.enabled())
            .map(|r| r.name().to_owned())
            .collect();
        let mut cases = Vec::new();
        for f in &files {
            cases.extend(case_file::load_file(f, &known)?);
        }
        Ok(TestSuite { set, cases })
    }

    /// Builds a suite from a rule set and cases made in code.
    pub fn from_cases(set: RuleSet, cases: Vec<Case>) -> TestSuite {
        TestSuite { set, cases }
    }

    /// The cases, in file and case order.
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    /// The rule set the cases run against.
    pub fn rules(&self) -> &RuleSet {
        &self.set
    }

    /// Runs every case in strict namespace mode.
    pub fn run(&self) -> SuiteReport {
        self.run_with(&SuiteOptions::default())
    }

    /// Runs the cases the filter selects.
    pub fn run_with(&self, opts: &SuiteOptions) -> SuiteReport {
        let started = Instant::now();
        let mut results = Vec::new();
        let mut skipped = Vec::new();
        for case in &self.cases {
            let selected = opts.filter.as_deref().is_none_or(|f| {
                case.name.contains(f)
                    || case
                        .file
                        .as_ref()
                        .and_then(|p| p.file_name())
                        .is_some_and(|n| n.to_string_lossy().contains(f))
            });
            if selected {
                results.push(case.run_with(&self.set, opts.namespace));
            } else {
                skipped.push(SkippedCase {
                    name: case.name.clone(),
                    file: case.file.clone(),
                });
            }
        }
        let coverage = Coverage::compute(&self.set, &results);
        SuiteReport {
            results,
            skipped,
            coverage,
            elapsed: started.elapsed(),
        }
    }
}

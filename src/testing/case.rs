//! A test case ([`Case`]: inputs and expectations, with builder methods), running it against a
//! rule set, and its [`CaseResult`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use super::context::{case_context, requested_scope};
use super::{report, Failure, NamespaceMode};
use crate::claims::NamespacePolicy;
use crate::rules::coverage::{self, Hits};
use crate::rules::{Outcome, RuleError, RuleLog, RuleSet, RunOptions};

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
    /// The input context, merged deeply over [`default_context`](super::default_context)
    /// (objects merge, arrays and other values replace); `None` uses the default as is.
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

    /// Sets the input context (merged deeply over [`default_context`](super::default_context)).
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

//! Running a rule set: the per-run options, what a run produces ([`Outcome`], [`Trace`]) and
//! the pipeline itself, rule after rule on one scope, with the per-rule metrics.

use std::collections::HashMap;
use std::time::Duration;

use rhai::{EvalAltResult, Position, Scope};
use serde::Serialize;
use serde_json::{Map, Value};

use super::inspect::{json_shape, token_map, MAX_USER_DEPTH};
use super::metadata::merge_into_scope_user;
use super::set::{RuleMetrics, RunOutcome};
use super::{engine, helpers, platform, stack, CompiledRule, MetadataUpdates, RuleError, RuleSet};
use crate::claims::{self, NamespacePolicy, Refusal, TokenKind};

/// Per-run options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Pins `now()` to these unix seconds.
    pub now: Option<i64>,
    /// Keys merged over the rule set's `configuration` for this run.
    pub configuration: Option<Map<String, Value>>,
    /// Runs only these rules (in set order); `None` runs every enabled rule.
    pub only: Option<Vec<String>>,
    /// Overrides the set's namespace policy for this run.
    pub namespace_policy: Option<NamespacePolicy>,
}

/// A claim the namespace rule left out, reported as a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The rule that set the claim.
    pub rule: String,
    /// The token.
    pub token: TokenKind,
    /// The claim key.
    pub key: String,
    /// Why it was dropped.
    pub reason: Refusal,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule {:?}: dropped claim {:?} from the {}: {}",
            self.rule, self.key, self.token, self.reason
        )
    }
}

/// The log lines one rule wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleLog {
    /// The rule.
    pub rule: String,
    /// Its `log`/`print` lines, in order.
    pub lines: Vec<String>,
}

/// The result of a successful pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The user as the rules left it.
    pub user: Value,
    /// Custom claims for the access token (after the namespace rule).
    pub access_token: Map<String, Value>,
    /// Custom claims for the ID token (after the namespace rule).
    pub id_token: Map<String, Value>,
    /// The rewritten access-token scope, when a rule set one.
    pub scope: Option<Vec<String>>,
    /// Log lines of each rule that ran.
    pub logs: Vec<RuleLog>,
    /// Claims the namespace rule dropped.
    pub warnings: Vec<Warning>,
    /// Metadata updates for the host to persist.
    pub metadata: MetadataUpdates,
}

/// Everything a run produced, success or not (for the test runner and tooling).
#[derive(Debug, Clone)]
pub struct Trace {
    /// The outcome, or why the run failed.
    pub result: Result<Outcome, RuleError>,
    /// Rules that started, in order.
    pub rules_run: Vec<String>,
    /// Log lines of each rule that ran, including the failing one.
    pub logs: Vec<RuleLog>,
    /// Metadata updates to persist: those of a successful run, and those made before a denial
    /// (so a rule can count refused attempts, as on Auth0); empty after any other failure.
    pub metadata: MetadataUpdates,
    /// Run time of each rule in `rules_run`, same order (the failing rule's included; one
    /// shorter when the engine panicked). For tooling such as `claimrules playground`.
    pub durations: Vec<Duration>,
}

const SCOPE_VARS: [&str; 3] = ["user", "context", "configuration"];

impl RuleSet {
    /// Runs every enabled rule in order on `user` and `context`.
    pub fn run(&self, user: Value, context: Value) -> Result<Outcome, RuleError> {
        self.run_with(user, context, &RunOptions::default()).result
    }

    /// Runs the pipeline with per-run options and returns everything it produced.
    pub fn run_with(&self, user: Value, context: Value, opts: &RunOptions) -> Trace {
        self.run_borrowed(&user, context, opts)
    }

    /// [`RuleSet::run_with`] on a borrowed `user`: the rules work on their own copy of it (a
    /// Rhai value), so a caller that keeps its user need not make a JSON copy first.
    pub fn run_borrowed(&self, user: &Value, context: Value, opts: &RunOptions) -> Trace {
        let mut trace = Trace {
            result: Err(RuleError::Input(String::new())),
            rules_run: Vec::new(),
            logs: Vec::new(),
            metadata: MetadataUpdates::default(),
            durations: Vec::new(),
        };
        let (rules_run, logs, metadata) =
            (&mut trace.rules_run, &mut trace.logs, &mut trace.metadata);
        let durations = &mut trace.durations;
        // Rules run on a stack with room for the sandbox's limits (see `stack`), and a panic
        // inside rhai becomes an error of the rule instead of unwinding into the caller.
        let started = std::time::Instant::now();
        let result = stack::with_run_stack(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_inner(user, context, opts, (rules_run, durations), logs, metadata)
            }))
        });
        trace.result = result.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(RuleError::Script {
                rule: trace.rules_run.last().cloned().unwrap_or_default(),
                line: 0,
                column: 0,
                message: format!("internal error of the rules engine: {what}"),
            })
        });
        metrics::histogram!("claimrules_pipeline_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match &mut trace.result {
            Ok(out) => out.logs = trace.logs.clone(),
            // Updates made before a denial persist (a rule may count refused attempts); a
            // rule error or a sandbox limit stores nothing.
            Err(RuleError::Denied { .. }) => {}
            Err(_) => trace.metadata = MetadataUpdates::default(),
        }
        trace
    }

    fn run_inner(
        &self,
        user: &Value,
        mut context: Value,
        opts: &RunOptions,
        (rules_run, durations): (&mut Vec<String>, &mut Vec<Duration>),
        logs: &mut Vec<RuleLog>,
        metadata: &mut MetadataUpdates,
    ) -> Result<Outcome, RuleError> {
        if !user.is_object() {
            return Err(RuleError::Input(format!(
                "user must be a JSON object, got {}",
                claims::json_type(user)
            )));
        }
        let ctx = context
            .as_object_mut()
            .ok_or_else(|| RuleError::Input("context must be a JSON object".to_string()))?;
        for field in ["accessToken", "idToken"] {
            if !ctx.get(field).is_some_and(Value::is_object) {
                ctx.insert(field.to_owned(), Value::Object(Map::new()));
            }
        }
        let configuration = match &opts.configuration {
            None => self.configuration_dyn.clone(),
            Some(extra) => {
                let mut merged = self.configuration.clone();
                merged.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                helpers::to_dynamic(&Value::Object(merged))
            }
        };
        let mut scope = Scope::with_capacity(8);
        scope.push_dynamic("user", helpers::to_dynamic(user));
        scope.push_dynamic("context", helpers::to_dynamic(&context));
        scope.push_constant_dynamic("configuration", configuration.clone());
        let platform_before = platform::snapshot(&context);

        let policy = opts
            .namespace_policy
            .unwrap_or(self.options.namespace.policy);
        let base_metadata = ["app_metadata", "user_metadata"].map(|field| {
            user.get(field)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        });
        let guard = engine::RunGuard::install(
            self.options.limits.pipeline_budget,
            self.options.limits.max_memory,
            opts.now,
            self.reserved.clone(),
            base_metadata,
        );
        // Script functions see `configuration` too (engine's variable resolver).
        guard.set_configuration(configuration.clone());
        // Which rule first set each refused claim key, so warnings and errors can name it.
        let mut offenders: HashMap<(TokenKind, String), (String, Refusal)> = HashMap::new();
        let mut scope_list: Option<Vec<String>> = None;

        for rule in self.rules.iter().filter(|r| r.enabled) {
            if let Some(only) = &opts.only {
                if !only.iter().any(|n| n == &rule.name) {
                    continue;
                }
            }
            rules_run.push(rule.name.clone());
            let started = std::time::Instant::now();
            let result = self.engine.run_ast_with_scope(&mut scope, &rule.ast);
            durations.push(started.elapsed());
            let outcome = match (&result, guard.peek_stop()) {
                (Ok(_), false) => RunOutcome::Ok,
                (Err(e), _) if matches!(**e, EvalAltResult::ErrorRuntime(ref v, _) if !engine::is_helper_error(v)) => {
                    RunOutcome::Denied
                }
                (_, true) if guard.denied() => RunOutcome::Denied,
                _ => RunOutcome::Error,
            };
            record_rule_metrics(rule, started.elapsed(), outcome, engine::operations());
            logs.push(RuleLog {
                rule: rule.name.clone(),
                lines: guard.take_logs(),
            });
            *metadata = guard.metadata();
            // A stop the script swallowed (e.g. `deny` inside a `sort` comparator) still ends it.
            let stop = guard.take_stop();
            match (result, stop) {
                (Err(err), stop) => return Err(self.classify(&rule.name, *err, stop)),
                (Ok(_), Some(stop)) => {
                    return Err(self.stopped(&rule.name, stop, Position::NONE));
                }
                (Ok(_), None) => {}
            }
            let pending = guard.take_pending_metadata();
            if !pending.is_empty() {
                merge_into_scope_user(&mut scope, &pending);
            }
            // A rule's top-level `let`s must not leak into the next rule. `configuration` is
            // pushed afresh too: rhai refuses changes to the constant's existing keys but lets a
            // rule add new ones, which must not reach later rules.
            scope.rewind(SCOPE_VARS.len() - 1);
            scope.push_constant_dynamic("configuration", configuration.clone());
            self.inspect_claims(&scope, &rule.name, policy, &mut offenders, &mut scope_list)?;
            platform::check(
                &scope,
                &platform_before,
                &self.options.ignore_platform_fields,
            )
            .map_err(|field| platform::error(rule, field))?;
        }
        drop(guard);

        let user: Value = match scope.get("user") {
            None => user.clone(),
            Some(d) => {
                if let Err(what) = json_shape(d, MAX_USER_DEPTH) {
                    let rule = rules_run.last().cloned().unwrap_or_default();
                    let (line, column) = self.position_of(&rule, &["user"]);
                    return Err(RuleError::Script {
                        rule,
                        line,
                        column,
                        message: format!("after the rules ran, `user` {what}"),
                    });
                }
                rhai::serde::from_dynamic(d).map_err(|e| RuleError::Input(format!("user: {e}")))?
            }
        };
        let mut access_token = token_map(&scope, TokenKind::AccessToken)?;
        let mut id_token = token_map(&scope, TokenKind::IdToken)?;
        access_token.remove("scope");
        let mut warnings = Vec::new();
        for (kind, map) in [
            (TokenKind::AccessToken, &mut access_token),
            (TokenKind::IdToken, &mut id_token),
        ] {
            map.retain(|_, v| !v.is_null());
            let mut dropped: Vec<String> = map
                .keys()
                .filter(|k| self.verdict(kind, k).is_err())
                .cloned()
                .collect();
            dropped.sort();
            for key in dropped {
                map.remove(&key);
                let (rule, reason) = offenders
                    .get(&(kind, key.clone()))
                    .cloned()
                    .unwrap_or_else(|| ("?".into(), Refusal::NotNamespaced));
                metrics::counter!(
                    "claimrules_namespace_drops_total",
                    "rule" => rule.clone(),
                    "token" => kind.to_string()
                )
                .increment(1);
                warnings.push(Warning {
                    rule,
                    token: kind,
                    key,
                    reason,
                });
            }
            let size = serde_json::to_vec(map)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            let limit = self.options.namespace.max_claims_bytes;
            if size > limit {
                return Err(RuleError::ClaimsTooLarge {
                    token: kind,
                    size,
                    limit,
                });
            }
        }
        Ok(Outcome {
            user,
            access_token,
            id_token,
            scope: scope_list,
            logs: Vec::new(),
            warnings,
            metadata: metadata.clone(),
        })
    }
}

/// Per-rule metrics (`claimrules_rule_*`, see README "Operating"), through the rule's own
/// handles.
fn record_rule_metrics(rule: &CompiledRule, took: Duration, outcome: RunOutcome, operations: u64) {
    let m = rule.metrics.get_or_init(|| RuleMetrics::new(&rule.name));
    m.duration.record(took.as_secs_f64());
    m.operations.record(operations as f64);
    m.runs[outcome as usize].increment(1);
}

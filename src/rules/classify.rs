//! Classifying how a rule ended: an engine stop (deny, deadline, stack, memory, helper fault)
//! or a rhai error, into a [`RuleError`] (an on-purpose denial or a script error).

use rhai::{Dynamic, EvalAltResult, Position};

use super::{budget, engine, hints, RuleError, RuleSet};

impl RuleSet {
    /// The error for a run the engine stopped; `pos` is where the script was when it stopped.
    pub(super) fn stopped(&self, rule: &str, stop: engine::Stop, pos: Position) -> RuleError {
        let rule = rule.to_owned();
        let (line, column) = (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
        match stop {
            engine::Stop::Denied(message) => RuleError::Denied { rule, message },
            engine::Stop::Fault(message, at) => RuleError::Script {
                rule,
                line: at.line().unwrap_or(0),
                column: at.position().unwrap_or(0),
                message,
            },
            engine::Stop::Deadline => RuleError::Timeout {
                rule,
                budget_ms: u64::try_from(self.options.limits.pipeline_budget.as_millis())
                    .unwrap_or(u64::MAX),
                line,
                column,
            },
            engine::Stop::Stack => RuleError::Script {
                rule,
                line,
                column,
                message: "calls nested too deeply for the native stack (unbounded recursion?)"
                    .into(),
            },
            engine::Stop::Memory => RuleError::Script {
                rule,
                line,
                column,
                message: format!(
                    "the rule used more than the sandbox's {} MiB of memory",
                    self.options.limits.max_memory / (1024 * 1024)
                ),
            },
        }
    }

    pub(super) fn classify(
        &self,
        rule: &str,
        err: EvalAltResult,
        stop: Option<engine::Stop>,
    ) -> RuleError {
        let err = root_cause(err);
        let pos = err.position();
        if let Some(stop) = stop {
            return self.stopped(rule, stop, pos);
        }
        let (line, column) = (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
        let rule = rule.to_owned();
        match err {
            EvalAltResult::ErrorTerminated(..) => RuleError::Script {
                rule,
                line,
                column,
                message: "terminated".into(),
            },
            EvalAltResult::ErrorRuntime(value, _) if engine::is_helper_error(&value) => {
                RuleError::Script {
                    rule,
                    line,
                    column,
                    message: thrown_message(&value),
                }
            }
            EvalAltResult::ErrorRuntime(value, _) => RuleError::Denied {
                rule,
                message: thrown_message(&value),
            },
            other => RuleError::Script {
                rule,
                line,
                column,
                message: describe(other),
            },
        }
    }
}

/// Unwraps errors raised inside script-defined functions to the one that started it.
pub(super) fn root_cause(err: EvalAltResult) -> EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | EvalAltResult::ErrorInModule(_, inner, _) => root_cause(*inner),
        other => other,
    }
}

/// A rhai error's message without the position suffix rhai appends.
pub(super) fn describe(mut e: EvalAltResult) -> String {
    e.clear_position();
    match &e {
        EvalAltResult::ErrorTooManyOperations(_) => {
            "the rule exceeded its operation budget (an endless loop?)".into()
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            "call depth limit exceeded (unbounded recursion?)".into()
        }
        _ => hints::with_runtime_hint(e.to_string()),
    }
}

fn thrown_message(value: &Dynamic) -> String {
    // Formatted no further than a denial message can hold, whatever was thrown.
    let cap = engine::MAX_DENY_MESSAGE;
    if let Some(map) = value.read_lock::<rhai::Map>() {
        if let Some(m) = map.get("message") {
            return budget::bounded_fmt(format_args!("{m}"), cap);
        }
    }
    budget::bounded_text(value, cap)
}

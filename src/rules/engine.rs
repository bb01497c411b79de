//! The sandboxed Rhai engine and the helpers rules can call.
//!
//! One [`Engine`] is built per rule set and shared by every run. Per-run state (the wall-clock
//! deadline, the pinned clock, captured log lines) lives in a thread-local slot that
//! [`RunGuard`] fills for the duration of a synchronous pipeline run, so the shared engine needs
//! no per-run registration.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use regex::Regex;
use rhai::{Array, Dynamic, Engine, EvalAltResult, NativeCallContext, Position};

use super::SandboxLimits;

/// Why the engine stopped a run from outside the script's own control flow.
///
/// A stop is *sticky*: once recorded, every further operation of the run terminates again. Some
/// rhai builtins swallow the errors of the script callbacks they call (`sort` ignores its
/// comparator's errors), so a single `ErrorTerminated` is not enough to guarantee that `deny`,
/// the deadline or a helper fault really ends the rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stop {
    /// The rule called `deny(message)`.
    Denied(String),
    /// A helper refused its input (e.g. an invalid regex), at this position.
    Fault(String, Position),
    /// The pipeline's wall-clock budget ran out.
    Deadline,
    /// The native stack ran low (deeply nested calls).
    Stack,
}

/// Marker carried by `ErrorTerminated` when the engine stops a run; the reason is the run's
/// recorded [`Stop`].
#[derive(Debug, Clone)]
pub(crate) struct Halt;

/// Native stack that must stay free while a rule runs. Below it, the run stops with a clear
/// error instead of overflowing the thread's stack and aborting the process. One operation
/// (a call level with its nested expressions) uses far less than this, even in a debug build.
const STACK_GUARD: usize = 256 * 1024;

/// State of the pipeline run in progress on this thread.
pub(crate) struct RunState {
    pub deadline: Instant,
    pub now: Option<i64>,
    pub logs: Vec<String>,
    pub reserved_hosts: Arc<Vec<String>>,
    pub stop: Option<Stop>,
}

thread_local! {
    static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
    /// Set with `RunState::stop`; a `Cell` so the per-operation check stays cheap.
    static HALTED: Cell<bool> = const { Cell::new(false) };
}

/// Records why the run stops (the first reason wins); returns the value to terminate with.
fn record_stop(stop: Stop) -> Dynamic {
    RUN.with(|r| {
        if let Some(s) = r.borrow_mut().as_mut() {
            s.stop.get_or_insert(stop);
        }
    });
    HALTED.with(|h| h.set(true));
    Dynamic::from(Halt)
}

/// Records why the run stops and returns the error that stops it.
fn halt(stop: Stop, pos: Position) -> Box<EvalAltResult> {
    terminate(record_stop(stop), pos)
}

/// Installs a run's state on this thread and removes it on drop, even on panic.
pub(crate) struct RunGuard;

impl RunGuard {
    pub(crate) fn install(budget: Duration, now: Option<i64>, reserved: Arc<Vec<String>>) -> Self {
        RUN.with(|r| {
            *r.borrow_mut() = Some(RunState {
                deadline: Instant::now() + budget,
                now,
                logs: Vec::new(),
                reserved_hosts: reserved,
                stop: None,
            })
        });
        HALTED.with(|h| h.set(false));
        RunGuard
    }

    /// Takes the reason the engine stopped the run, if it did.
    pub(crate) fn take_stop(&self) -> Option<Stop> {
        HALTED.with(|h| h.set(false));
        RUN.with(|r| r.borrow_mut().as_mut().and_then(|s| s.stop.take()))
    }

    /// Takes the log lines captured since the last call.
    pub(crate) fn take_logs(&self) -> Vec<String> {
        RUN.with(|r| {
            r.borrow_mut()
                .as_mut()
                .map(|s| std::mem::take(&mut s.logs))
                .unwrap_or_default()
        })
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        RUN.with(|r| *r.borrow_mut() = None);
        HALTED.with(|h| h.set(false));
    }
}

fn push_log(line: String) {
    RUN.with(|r| {
        if let Some(s) = r.borrow_mut().as_mut() {
            // Bound what one run can buffer: a rule that logs in a loop must not grow memory.
            if s.logs.len() < 1000 {
                s.logs.push(line);
            }
        }
    });
}

fn terminate(value: Dynamic, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(value, pos))
}

/// Compiled patterns shared by all rule sets; bounded so hostile rules cannot grow it forever.
fn regex_cache() -> &'static RwLock<HashMap<String, Arc<Regex>>> {
    static CACHE: OnceLock<RwLock<HashMap<String, Arc<Regex>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

const REGEX_CACHE_CAP: usize = 512;

fn compiled(ctx: &NativeCallContext, pattern: &str) -> Result<Arc<Regex>, Box<EvalAltResult>> {
    if let Some(re) = regex_cache()
        .read()
        .ok()
        .and_then(|c| c.get(pattern).cloned())
    {
        return Ok(re);
    }
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map(Arc::new)
        .map_err(|e| {
            halt(
                Stop::Fault(
                    format!("invalid regex {pattern:?}: {e}"),
                    ctx.call_position(),
                ),
                ctx.call_position(),
            )
        })?;
    if let Ok(mut cache) = regex_cache().write() {
        if cache.len() < REGEX_CACHE_CAP {
            cache.insert(pattern.to_owned(), re.clone());
        }
    }
    Ok(re)
}

fn log_text(value: &Dynamic) -> String {
    if value.is_string() {
        value.clone().into_string().unwrap_or_default()
    } else {
        value.to_string()
    }
}

/// Builds the sandboxed engine with every limit set explicitly (rhai's defaults differ between
/// debug and release builds) and the rule helpers registered.
pub(crate) fn build(limits: &SandboxLimits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(rhai::packages::Package::as_shared_module(
        &rhai::packages::StandardPackage::new(),
    ));
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(limits.max_variables)
        .set_max_functions(limits.max_functions)
        .set_max_modules(0)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(false);
    // `new_raw` has no module resolver, and these symbols are refused at compile time anyway.
    engine.disable_symbol("import");
    engine.disable_symbol("eval");

    engine.on_progress(|ops| {
        if HALTED.with(Cell::get) {
            return Some(Dynamic::from(Halt));
        }
        // Every call level is at least one operation, so this catches runaway nesting before
        // the thread's stack is gone.
        if super::stack::remaining().is_some_and(|left| left < STACK_GUARD) {
            return Some(record_stop(Stop::Stack));
        }
        // Checking the clock every operation would cost more than the operations themselves.
        if ops % 256 != 0 {
            return None;
        }
        let late = RUN.with(|r| {
            r.borrow()
                .as_ref()
                .is_some_and(|s| Instant::now() >= s.deadline)
        });
        if late {
            return Some(record_stop(Stop::Deadline));
        }
        None
    });
    engine.on_print(|s| push_log(s.to_owned()));
    engine.on_debug(|s, _, _| push_log(s.to_owned()));

    engine.register_fn(
        "deny",
        |ctx: NativeCallContext, msg: Dynamic| -> Result<(), Box<EvalAltResult>> {
            Err(halt(Stop::Denied(log_text(&msg)), ctx.call_position()))
        },
    );
    engine.register_fn("log", |msg: Dynamic| push_log(log_text(&msg)));
    engine.register_fn("log", |a: Dynamic, b: Dynamic| {
        push_log(format!("{} {}", log_text(&a), log_text(&b)))
    });
    engine.register_fn("log", |a: Dynamic, b: Dynamic, c: Dynamic| {
        push_log(format!(
            "{} {} {}",
            log_text(&a),
            log_text(&b),
            log_text(&c)
        ))
    });
    engine.register_fn(
        "regex_match",
        |ctx: NativeCallContext, pattern: &str, text: &str| -> Result<bool, Box<EvalAltResult>> {
            Ok(compiled(&ctx, pattern)?.is_match(text))
        },
    );
    engine.register_fn(
        "regex_captures",
        |ctx: NativeCallContext,
         pattern: &str,
         text: &str|
         -> Result<Dynamic, Box<EvalAltResult>> {
            let re = compiled(&ctx, pattern)?;
            Ok(match re.captures(text) {
                None => Dynamic::UNIT,
                Some(caps) => {
                    let groups: Array = caps
                        .iter()
                        .map(|g| g.map_or(Dynamic::UNIT, |m| Dynamic::from(m.as_str().to_owned())))
                        .collect();
                    Dynamic::from_array(groups)
                }
            })
        },
    );
    engine.register_fn("now", || -> i64 {
        RUN.with(|r| r.borrow().as_ref().and_then(|s| s.now))
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            })
    });
    engine.register_fn("is_namespaced", |key: &str| -> bool {
        let reserved = RUN.with(|r| r.borrow().as_ref().map(|s| s.reserved_hosts.clone()));
        crate::claims::is_namespaced(key, reserved.as_deref().map_or(&[], |v| v.as_slice()))
    });
    engine
}

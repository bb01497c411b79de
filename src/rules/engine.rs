//! The sandboxed Rhai engine and the helpers rules can call.
//!
//! One [`Engine`] is built per rule set and shared by every run. Per-run state (the wall-clock
//! deadline, the pinned clock, captured log lines) lives in a thread-local slot that
//! [`RunGuard`] fills for the duration of a synchronous pipeline run, so the shared engine needs
//! no per-run registration.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use regex::Regex;
use rhai::{Array, Dynamic, Engine, EvalAltResult, NativeCallContext, Position};

use serde_json::{Map, Value};

use super::{MetadataUpdates, SandboxLimits};

/// Most modules one rule may import.
const MAX_IMPORTS: usize = 32;

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
    /// The run allocated more than its memory budget (see `budget`).
    Memory,
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
    /// Bytes of `logs` so far this run (bounded by [`MAX_LOG_BYTES`]).
    pub log_bytes: usize,
    pub reserved_hosts: Arc<Vec<String>>,
    pub stop: Option<Stop>,
    /// Outbound HTTP calls made so far in this pipeline run (for `[http] max_calls`).
    pub http_calls: u32,
    /// Messages of the catchable errors helpers raised (see [`helper_error`]).
    pub helper_errors: Vec<String>,
    /// Every metadata update of the run, merged (what the host persists).
    pub metadata: MetadataUpdates,
    /// Updates not yet merged into the scope's `user` (done after each rule).
    pub pending: MetadataUpdates,
    /// `user.app_metadata` and `user.user_metadata` as the run started, for the size cap.
    pub base_metadata: [Map<String, Value>; 2],
    /// The run's `configuration`, which script functions read through the variable resolver.
    pub configuration: Dynamic,
}

/// Largest JSON size of a user's `app_metadata` or `user_metadata` after an update.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// What a rule set's engine holds beyond its limits.
#[derive(Clone, Default)]
pub(crate) struct EngineParts {
    /// The set's cache (`cache_get` / `cache_set`).
    pub cache: Arc<super::cache::Cache>,
    /// Modules under `lib/` that rules may `import`.
    pub lib: Option<Arc<super::modules::LibResolver>>,
    /// The client of `http_get` and friends; `None` when `[http]` allows no host.
    pub http: Option<Arc<super::http::HttpClient>>,
}

thread_local! {
    static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
    /// Set with `RunState::stop`; a `Cell` so the per-operation check stays cheap.
    static HALTED: Cell<bool> = const { Cell::new(false) };
    /// Operations the current rule has used (rhai's counter, as the progress callback sees it).
    static OPERATIONS: Cell<u64> = const { Cell::new(0) };
    /// Metadata updates wait to be merged into the scope's `user` (checked on every variable
    /// read, so a `Cell`).
    static PENDING: Cell<bool> = const { Cell::new(false) };
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
    pub(crate) fn install(
        budget: Duration,
        memory: usize,
        now: Option<i64>,
        reserved: Arc<Vec<String>>,
        base_metadata: [Map<String, Value>; 2],
    ) -> Self {
        let deadline = Instant::now() + budget;
        super::budget::arm(deadline);
        super::budget::start_memory(memory);
        RUN.with(|r| {
            *r.borrow_mut() = Some(RunState {
                deadline,
                now,
                logs: Vec::new(),
                log_bytes: 0,
                reserved_hosts: reserved,
                stop: None,
                http_calls: 0,
                helper_errors: Vec::new(),
                metadata: MetadataUpdates::default(),
                pending: MetadataUpdates::default(),
                base_metadata,
                configuration: Dynamic::UNIT,
            })
        });
        HALTED.with(|h| h.set(false));
        PENDING.with(|p| p.set(false));
        RunGuard
    }

    /// Whether the engine has recorded a stop for the rule that just ran (not taken).
    pub(crate) fn peek_stop(&self) -> bool {
        HALTED.with(Cell::get)
    }

    /// Whether the recorded stop is a `deny`.
    pub(crate) fn denied(&self) -> bool {
        RUN.with(|r| {
            r.borrow()
                .as_ref()
                .is_some_and(|s| matches!(s.stop, Some(Stop::Denied(_))))
        })
    }

    /// Sets the `configuration` that script functions see.
    pub(crate) fn set_configuration(&self, configuration: Dynamic) {
        RUN.with(|r| {
            if let Some(s) = r.borrow_mut().as_mut() {
                s.configuration = configuration;
            }
        });
    }

    /// Takes the reason the engine stopped the run, if it did.
    pub(crate) fn take_stop(&self) -> Option<Stop> {
        HALTED.with(|h| h.set(false));
        RUN.with(|r| r.borrow_mut().as_mut().and_then(|s| s.stop.take()))
    }

    /// Takes the metadata updates made since the last call (to merge into the scope's `user`).
    pub(crate) fn take_pending_metadata(&self) -> MetadataUpdates {
        take_pending()
    }

    /// Every metadata update of the run so far.
    pub(crate) fn metadata(&self) -> MetadataUpdates {
        RUN.with(|r| {
            r.borrow()
                .as_ref()
                .map(|s| s.metadata.clone())
                .unwrap_or_default()
        })
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
        super::budget::disarm();
        super::budget::stop_memory();
    }
}

/// Operations the last rule used, and resets the count for the next one.
pub(crate) fn operations() -> u64 {
    OPERATIONS.with(|o| o.replace(0))
}

/// Takes the metadata updates not yet merged into the scope's `user`.
fn take_pending() -> MetadataUpdates {
    PENDING.with(|p| p.set(false));
    RUN.with(|r| {
        r.borrow_mut()
            .as_mut()
            .map(|s| std::mem::take(&mut s.pending))
            .unwrap_or_default()
    })
}

/// Longest log line a rule can write (longer ones are cut, marked `…[truncated]`).
pub const MAX_LOG_LINE: usize = 4 * 1024;
/// Most bytes of log lines one run keeps; later lines are dropped (one line says so).
pub const MAX_LOG_BYTES: usize = 64 * 1024;
/// Most log lines one run keeps.
const MAX_LOG_LINES: usize = 1000;
/// Longest `deny` message (it travels in the redirect's `error_description`).
pub const MAX_DENY_MESSAGE: usize = 1024;

fn push_log(line: &str) {
    RUN.with(|r| {
        if let Some(s) = r.borrow_mut().as_mut() {
            // Bound what one run can buffer: a rule that logs in a loop must not grow memory.
            if s.logs.len() >= MAX_LOG_LINES || s.log_bytes >= MAX_LOG_BYTES {
                return;
            }
            let line = super::budget::cut(line, MAX_LOG_LINE);
            s.log_bytes += line.len();
            if s.log_bytes >= MAX_LOG_BYTES || s.logs.len() + 1 == MAX_LOG_LINES {
                s.logs.push(format!(
                    "[claimrules: log limit of {MAX_LOG_LINES} lines / {MAX_LOG_BYTES} bytes per \
                     run reached; further lines dropped]"
                ));
                s.log_bytes = MAX_LOG_BYTES;
                return;
            }
            s.logs.push(line.into_owned());
        }
    });
}

/// A catchable error of a helper (bad input, a refused or failed HTTP call): the rule's
/// `try`/`catch` gets `message` as the thrown value; uncaught, it fails the run as a script
/// error (`server_error`), not as a denial, because [`is_helper_error`] recognizes it.
pub(crate) fn helper_error(pos: Position, message: impl Into<String>) -> Box<EvalAltResult> {
    let message = message.into();
    RUN.with(|r| {
        if let Some(s) = r.borrow_mut().as_mut() {
            // Bounded like the logs: a rule that fails a helper in a loop must not grow memory.
            if s.helper_errors.len() < 64 {
                s.helper_errors.push(message.clone());
            }
        }
    });
    Box::new(EvalAltResult::ErrorRuntime(message.into(), pos))
}

/// Whether a thrown value is a helper error raised in this run (rather than a rule's own
/// `throw`, which is a denial).
pub(crate) fn is_helper_error(value: &Dynamic) -> bool {
    let Some(text) = value.read_lock::<rhai::ImmutableString>() else {
        return false;
    };
    RUN.with(|r| {
        r.borrow()
            .as_ref()
            .is_some_and(|s| s.helper_errors.iter().any(|m| m.as_str() == text.as_str()))
    })
}

/// `value` as JSON when it has a JSON form (no deeper than the claims' limit); else what is
/// wrong with it.
pub(crate) fn to_json_value(value: &Dynamic) -> Result<Value, String> {
    super::json_shape(value, super::MAX_CLAIM_DEPTH)?;
    rhai::serde::from_dynamic(value).map_err(|e| e.to_string())
}

/// `update_app_metadata(map)` / `update_user_metadata(map)`: records the update for the host
/// to persist and for the scope's `user` (merged after the rule), refusing one that is not a
/// map or that would make the metadata larger than [`MAX_METADATA_BYTES`].
fn update_metadata(
    ctx: &NativeCallContext,
    which: usize,
    update: &Dynamic,
) -> Result<(), Box<EvalAltResult>> {
    let name = ["update_app_metadata", "update_user_metadata"][which];
    let pos = ctx.call_position();
    if !update.is_map() {
        return Err(helper_error(
            pos,
            format!("{name}: expects a map, got {}", update.type_name()),
        ));
    }
    let Value::Object(patch) = to_json_value(update)
        .map_err(|what| helper_error(pos, format!("{name}: the map {what}")))?
    else {
        return Err(helper_error(pos, format!("{name}: expects a map")));
    };
    // Converting a large map takes a while: do not merge past the run's budget.
    check_budget(pos)?;
    let refused = RUN.with(|r| {
        let mut r = r.borrow_mut();
        let s = r.as_mut()?;
        let mut total = s.metadata.get(which).cloned().unwrap_or_default();
        super::merge_metadata(&mut total, &patch, true);
        let mut result = s.base_metadata[which].clone();
        super::merge_metadata(&mut result, &total, false);
        let size = serde_json::to_vec(&result).map_or(usize::MAX, |v| v.len());
        if size > MAX_METADATA_BYTES {
            return Some(format!(
                "{name}: the metadata would be {size} bytes of JSON, over the limit of {MAX_METADATA_BYTES}"
            ));
        }
        s.metadata.set(which, total);
        let mut pending = s.pending.get(which).cloned().unwrap_or_default();
        super::merge_metadata(&mut pending, &patch, true);
        s.pending.set(which, pending);
        PENDING.with(|p| p.set(true));
        None
    });
    match refused {
        Some(message) => Err(helper_error(pos, message)),
        None => Ok(()),
    }
}

/// Time left of the pipeline's wall-clock budget; `None` outside a run (e.g. while a module
/// under `lib/` is evaluated at load time).
pub(crate) fn time_left() -> Option<Duration> {
    RUN.with(|r| {
        r.borrow()
            .as_ref()
            .map(|s| s.deadline.saturating_duration_since(Instant::now()))
    })
}

/// Stops the run because its wall-clock budget ran out (not catchable).
pub(crate) fn deadline_passed(pos: Position) -> Box<EvalAltResult> {
    halt(Stop::Deadline, pos)
}

/// `Err` (the run stops, not catchable) when the run is past its deadline or over its memory
/// budget. Cheap (two thread-local reads): natives that loop over large inputs or wait call it
/// as they go, so no single call can carry a run far past its budget.
pub(crate) fn check_budget(pos: Position) -> Result<(), Box<EvalAltResult>> {
    if super::budget::late() {
        return Err(halt(Stop::Deadline, pos));
    }
    if super::budget::over_memory() {
        return Err(halt(Stop::Memory, pos));
    }
    Ok(())
}

/// Counts one outbound HTTP call of this run and returns how many were made, this one included.
pub(crate) fn count_http_call() -> u32 {
    RUN.with(|r| {
        r.borrow_mut().as_mut().map_or(1, |s| {
            s.http_calls = s.http_calls.saturating_add(1);
            s.http_calls
        })
    })
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

/// A logged value's text, formatted no further than a log line can hold.
fn log_text(value: &Dynamic) -> String {
    super::budget::bounded_text(value, MAX_LOG_LINE)
}

/// Replaces rhai's `sleep` and the formatting behind `print` / `debug` of arrays, maps and
/// BLOBs (registered in the engine's global namespace, which rhai searches before its
/// packages):
///
/// - `sleep(n)` blocked the thread for `n` seconds, far past the pipeline's budget, holding a
///   blocking thread the whole time. A login must not wait on purpose: `sleep` is a helper error
///   (a rule that must wait for an API uses `http_get` and friends, which wait within the
///   budget).
/// - `print(x)` / `debug(x)` formatted the whole value before the log line was cut; they format
///   at most one log line's worth.
fn register_bounded_output(engine: &mut Engine) {
    fn no_sleep(ctx: &NativeCallContext) -> Box<EvalAltResult> {
        helper_error(
            ctx.call_position(),
            "sleep: not available in rules (a login must not wait on purpose; the pipeline's \
             time budget is for work)",
        )
    }
    engine.register_fn(
        "sleep",
        |ctx: NativeCallContext, _s: i64| -> Result<(), Box<EvalAltResult>> { Err(no_sleep(&ctx)) },
    );
    engine.register_fn(
        "sleep",
        |ctx: NativeCallContext, _s: f64| -> Result<(), Box<EvalAltResult>> { Err(no_sleep(&ctx)) },
    );
    // rhai shows arrays and maps alike for both (items as `to_debug` shows them), which is
    // what their `Debug` formatting writes.
    for name in ["print", "debug"] {
        engine.register_fn(name, |a: &mut Array| -> rhai::ImmutableString {
            super::budget::bounded_fmt(format_args!("{a:?}"), MAX_LOG_LINE).into()
        });
        engine.register_fn(name, |m: &mut rhai::Map| -> rhai::ImmutableString {
            super::budget::bounded_fmt(format_args!("#{m:?}"), MAX_LOG_LINE).into()
        });
        engine.register_fn(name, |b: &mut rhai::Blob| -> rhai::ImmutableString {
            super::budget::bounded_fmt(format_args!("{b:02x?}"), MAX_LOG_LINE).into()
        });
    }
}

/// Builds the sandboxed engine with every limit set explicitly (rhai's defaults differ between
/// debug and release builds) and the rule helpers registered.
pub(crate) fn build(limits: &SandboxLimits, parts: &EngineParts) -> Engine {
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
        .set_max_modules(MAX_IMPORTS)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(false);
    // `new_raw` has no module resolver: `import` reaches only the set's `lib/` modules, through
    // a resolver that refuses every other path; `eval` is refused at compile time.
    engine.disable_symbol("eval");
    match &parts.lib {
        Some(lib) => {
            engine.set_module_resolver(super::modules::Resolver(lib.clone()));
        }
        None => {
            engine.set_module_resolver(super::modules::Resolver::default());
        }
    }

    engine.on_progress(|ops| {
        OPERATIONS.with(|o| o.set(ops));
        if HALTED.with(Cell::get) {
            return Some(Dynamic::from(Halt));
        }
        // Every call level is at least one operation, so this catches runaway nesting before
        // the thread's stack is gone.
        if super::stack::remaining().is_some_and(|left| left < STACK_GUARD) {
            return Some(record_stop(Stop::Stack));
        }
        // The watchdog's flag and the allocator's (see `budget`): two thread-local reads, so
        // every operation checks them, and a run stops at the first operation past its deadline
        // or its memory budget.
        if super::budget::late() {
            return Some(record_stop(Stop::Deadline));
        }
        if super::budget::over_memory() {
            return Some(record_stop(Stop::Memory));
        }
        // The clock itself, in case the watchdog thread is starved of CPU; reading it every
        // operation would cost more than the operations themselves.
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
    // A rule that reads `user` after `update_app_metadata` sees the update at once, as a
    // JavaScript rule sees the object it passed: pending updates are merged into the scope's
    // `user` when the variable is next read.
    // `on_var` is marked volatile by rhai (not deprecated); Cargo.lock pins the version and
    // tests/it/rules_metadata.rs proves the behaviour.
    #[allow(deprecated)]
    engine.on_var(|name, _, mut ctx| {
        if name == "user" && PENDING.with(Cell::get) {
            let pending = take_pending();
            super::merge_into_scope_user(ctx.scope_mut(), &pending);
        }
        // A script function has a scope of its own, without the rule's `configuration`: give
        // it the run's (read-only, as rhai makes every resolved value).
        if name == "configuration" && !ctx.scope().contains("configuration") {
            let configuration = RUN.with(|r| r.borrow().as_ref().map(|s| s.configuration.clone()));
            return Ok(configuration.filter(|c| !c.is_unit()));
        }
        Ok(None)
    });
    engine.on_print(push_log);
    engine.on_debug(|s, _, _| push_log(s));
    register_bounded_output(&mut engine);

    engine.register_fn(
        "deny",
        |ctx: NativeCallContext, msg: Dynamic| -> Result<(), Box<EvalAltResult>> {
            let message = super::budget::bounded_text(&msg, MAX_DENY_MESSAGE);
            Err(halt(Stop::Denied(message), ctx.call_position()))
        },
    );
    engine.register_fn("log", |msg: Dynamic| push_log(&log_text(&msg)));
    engine.register_fn("log", |a: Dynamic, b: Dynamic| {
        push_log(&format!("{} {}", log_text(&a), log_text(&b)))
    });
    engine.register_fn("log", |a: Dynamic, b: Dynamic, c: Dynamic| {
        push_log(&format!(
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
            .unwrap_or_else(crate::model::unix_now)
    });
    super::helpers::register(&mut engine);
    super::cache::register(&mut engine, parts.cache.clone());
    super::http::register(&mut engine, parts.http.clone());
    engine.register_fn(
        "update_app_metadata",
        |ctx: NativeCallContext, update: Dynamic| update_metadata(&ctx, 0, &update),
    );
    engine.register_fn(
        "update_user_metadata",
        |ctx: NativeCallContext, update: Dynamic| update_metadata(&ctx, 1, &update),
    );
    engine.register_fn("is_namespaced", |key: &str| -> bool {
        let reserved = RUN.with(|r| r.borrow().as_ref().map(|s| s.reserved_hosts.clone()));
        crate::claims::is_namespaced(key, reserved.as_deref().map_or(&[], |v| v.as_slice()))
    });
    engine
}

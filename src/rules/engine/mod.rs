//! The sandboxed Rhai engine and the helpers rules can call.
//!
//! One [`Engine`] is built per rule set and shared by every run. Per-run state (the wall-clock
//! deadline, the pinned clock, captured log lines) lives in a thread-local slot that
//! [`RunGuard`] fills for the duration of a synchronous pipeline run, so the shared engine needs
//! no per-run registration.

mod state;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use regex::Regex;
use rhai::{Array, Dynamic, Engine, EvalAltResult, NativeCallContext};

use serde_json::Value;

use super::SandboxLimits;
pub(crate) use state::{
    count_http_call, deadline_passed, helper_error, is_helper_error, operations, time_left,
    RunGuard, Stop,
};
use state::{halt, push_log, record_stop, take_pending, update_metadata, Halt};
use state::{HALTED, OPERATIONS, PENDING, RUN};
pub use state::{MAX_DENY_MESSAGE, MAX_LOG_LINE, MAX_METADATA_BYTES};

/// Most modules one rule may import.
const MAX_IMPORTS: usize = 32;

/// Native stack that must stay free while a rule runs. Below it, the run stops with a clear
/// error instead of overflowing the thread's stack and aborting the process. One operation
/// (a call level with its nested expressions) uses far less than this, even in a debug build.
const STACK_GUARD: usize = 256 * 1024;

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

/// `value` as JSON when it has a JSON form (no deeper than the claims' limit); else what is
/// wrong with it.
pub(crate) fn to_json_value(value: &Dynamic) -> Result<Value, String> {
    super::inspect::json_shape(value, super::inspect::MAX_CLAIM_DEPTH)?;
    rhai::serde::from_dynamic(value).map_err(|e| e.to_string())
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
            super::metadata::merge_into_scope_user(ctx.scope_mut(), &pending);
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

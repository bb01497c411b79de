//! The state of the pipeline run in progress on this thread: the deadline, the pinned clock,
//! log lines, the recorded stop, helper errors, HTTP call count and metadata updates.
//!
//! [`RunGuard`] fills the thread-local slot for the duration of a synchronous run and empties
//! it on drop; the engine's callbacks and the natives read and update it through this module.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, EvalAltResult, NativeCallContext, Position};
use serde_json::{Map, Value};

use super::to_json_value;
use crate::rules::{budget, merge_metadata, MetadataUpdates};

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

thread_local! {
    pub(super) static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
    /// Set with `RunState::stop`; a `Cell` so the per-operation check stays cheap.
    pub(super) static HALTED: Cell<bool> = const { Cell::new(false) };
    /// Operations the current rule has used (rhai's counter, as the progress callback sees it).
    pub(super) static OPERATIONS: Cell<u64> = const { Cell::new(0) };
    /// Metadata updates wait to be merged into the scope's `user` (checked on every variable
    /// read, so a `Cell`).
    pub(super) static PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Records why the run stops (the first reason wins); returns the value to terminate with.
pub(super) fn record_stop(stop: Stop) -> Dynamic {
    RUN.with(|r| {
        if let Some(s) = r.borrow_mut().as_mut() {
            s.stop.get_or_insert(stop);
        }
    });
    HALTED.with(|h| h.set(true));
    Dynamic::from(Halt)
}

/// Records why the run stops and returns the error that stops it.
pub(super) fn halt(stop: Stop, pos: Position) -> Box<EvalAltResult> {
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
        budget::arm(deadline);
        budget::start_memory(memory);
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
        budget::disarm();
        budget::stop_memory();
    }
}

/// Operations the last rule used, and resets the count for the next one.
pub(crate) fn operations() -> u64 {
    OPERATIONS.with(|o| o.replace(0))
}

/// Takes the metadata updates not yet merged into the scope's `user`.
pub(super) fn take_pending() -> MetadataUpdates {
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

pub(super) fn push_log(line: &str) {
    RUN.with(|r| {
        if let Some(s) = r.borrow_mut().as_mut() {
            // Bound what one run can buffer: a rule that logs in a loop must not grow memory.
            if s.logs.len() >= MAX_LOG_LINES || s.log_bytes >= MAX_LOG_BYTES {
                return;
            }
            let line = budget::cut(line, MAX_LOG_LINE);
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

/// `update_app_metadata(map)` / `update_user_metadata(map)`: records the update for the host
/// to persist and for the scope's `user` (merged after the rule), refusing one that is not a
/// map or that would make the metadata larger than [`MAX_METADATA_BYTES`].
pub(super) fn update_metadata(
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
        merge_metadata(&mut total, &patch, true);
        let mut result = s.base_metadata[which].clone();
        merge_metadata(&mut result, &total, false);
        let size = serde_json::to_vec(&result).map_or(usize::MAX, |v| v.len());
        if size > MAX_METADATA_BYTES {
            return Some(format!(
                "{name}: the metadata would be {size} bytes of JSON, over the limit of {MAX_METADATA_BYTES}"
            ));
        }
        s.metadata.set(which, total);
        let mut pending = s.pending.get(which).cloned().unwrap_or_default();
        merge_metadata(&mut pending, &patch, true);
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
    if budget::late() {
        return Err(halt(Stop::Deadline, pos));
    }
    if budget::over_memory() {
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

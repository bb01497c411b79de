//! Per-run budgets the engine enforces from outside the script, cheaply enough to check on
//! every operation:
//!
//! - **Time.** A watchdog thread sets the running thread's flag when its run's deadline passes
//!   ([`arm`] / [`late`]); the engine's progress hook reads that flag on every operation, so a
//!   rule is stopped at the first operation after its deadline (reading the clock on every
//!   operation would cost more than the operations), and native helpers that can take long read
//!   it too (`engine::state::check_budget`).
//! - **Memory.** [`RunAllocator`], the binary's global allocator, counts the bytes a run's
//!   thread allocates and frees while the run is active ([`start_memory`]); past the run's
//!   budget the flag of [`over_memory`] is set and the engine stops the run at its next
//!   operation. rhai's own size limits apply per value (and miss a map grown by `m[k] = v`);
//!   this bounds the run as a whole, whatever builds the data. An embedder that wants the
//!   memory budget installs [`RunAllocator`] as its `#[global_allocator]`; without it
//!   ([`memory_budget_enforced`] is `false`) only the per-value limits apply.
//! - **Text.** [`bounded_text`] formats a value into at most a given number of bytes and stops
//!   formatting there, so `log(huge_map)` costs what it keeps, not what the map holds.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use rhai::Dynamic;

// ---------------------------------------------------------------------------------------------
// Memory.

thread_local! {
    /// The active run's memory budget in bytes; 0 outside a run.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed on this thread since the run started.
    static USED: Cell<isize> = const { Cell::new(0) };
    /// Set once `USED` went over `LIMIT`.
    static OVER: Cell<bool> = const { Cell::new(false) };
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The process's allocator (mimalloc with the `mimalloc` feature, the system allocator without),
/// counting what each rule run allocates (see the module documentation).
/// The `claimrules` binary installs it; an embedder may too:
///
/// ```
/// #[global_allocator]
/// static ALLOC: claimrules::rules::RunAllocator = claimrules::rules::RunAllocator;
/// # fn main() {}
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct RunAllocator;

// What `RunAllocator` forwards to: mimalloc with the `mimalloc` feature (the `claimrules`
// binary's), else the system allocator. On the refresh load mimalloc spent 6 % less CPU per
// request than glibc's malloc (median of 4 alternating rounds) at the same RSS
// (docs/perf/profile-refresh-2026-12-03.md, evening).
#[cfg(feature = "mimalloc")]
const INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(not(feature = "mimalloc"))]
const INNER: std::alloc::System = std::alloc::System;

/// mimalloc's options, set before Rust's runtime allocates anything: from `.init_array`, which
/// runs after mimalloc's own load-time constructor (priority 101) has read its defaults and the
/// `MIMALLOC_*` environment, and before `main`. Setting them in `main` is too late: the first
/// allocation has reserved the first arena with the defaults, and RSS under load was 39–59 MiB
/// against 23 MiB with these set from the start.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
mod mimalloc_options {
    /// `mi_option_arena_eager_commit` in mimalloc's `include/mimalloc.h` (v3).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    /// `mi_option_purge_delay` in mimalloc's `include/mimalloc.h` (v3).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

    /// Commit arena memory as it is used, not the whole arena at once, and give freed pages back
    /// to the OS at once, not a second later: what keeps RSS near glibc's.
    extern "C" fn set() {
        // SAFETY: `mi_option_set` only stores into mimalloc's static option table, which its
        // load-time constructor has initialized; nothing else runs this early.
        unsafe {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }

    #[used]
    #[link_section = ".init_array"]
    static SET: extern "C" fn() = set;

    /// The option values in force (for the test that they were set before `main`).
    #[cfg(test)]
    pub(super) fn values() -> (i64, i64) {
        // SAFETY: reads mimalloc's option table.
        unsafe {
            (
                libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT) as i64,
                libmimalloc_sys::mi_option_get(PURGE_DELAY) as i64,
            )
        }
    }
}

#[inline]
fn count(delta: isize) {
    // `try_with`: never panics, also while the thread's locals are torn down. The cells are
    // `const`-initialized without destructors, so reading them never allocates.
    let _ = LIMIT.try_with(|limit| {
        let limit = limit.get();
        if limit == 0 {
            return;
        }
        let _ = USED.try_with(|used| {
            let now = used.get().saturating_add(delta);
            used.set(now);
            if now > limit as isize {
                let _ = OVER.try_with(|o| o.set(true));
            }
        });
    });
}

#[inline]
fn installed() {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `INNER`; the bookkeeping only touches
// thread-local cells and never allocates.
unsafe impl GlobalAlloc for RunAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        installed();
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { INNER.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        installed();
        // SAFETY: as for `alloc`.
        let p = unsafe { INNER.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `INNER` through this allocator with `layout`.
        unsafe { INNER.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        let p = unsafe { INNER.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Whether [`RunAllocator`] is the global allocator (so the memory budget is enforced).
pub fn memory_budget_enforced() -> bool {
    // Any allocation at all has gone through it by the time anyone asks.
    INSTALLED.load(Ordering::Relaxed)
}

/// Starts counting this thread's allocations against `limit` bytes (0: no budget).
pub(crate) fn start_memory(limit: usize) {
    USED.with(|u| u.set(0));
    OVER.with(|o| o.set(false));
    LIMIT.with(|l| l.set(limit));
}

/// Stops counting this thread's allocations.
pub(crate) fn stop_memory() {
    LIMIT.with(|l| l.set(0));
    OVER.with(|o| o.set(false));
}

/// Whether the run on this thread went over its memory budget.
#[inline]
pub(crate) fn over_memory() -> bool {
    OVER.with(Cell::get)
}

// ---------------------------------------------------------------------------------------------
// Time.

/// Deadlines of the runs in progress, earliest first, with the flag to set when each passes.
struct Watchdog {
    due: Mutex<Due>,
    wake: Condvar,
}

/// The watchdog's queue and when it will look at it next.
#[derive(Default)]
struct Due {
    runs: BTreeMap<(Instant, u64), Arc<AtomicBool>>,
    /// When the watchdog wakes up next on its own; `None` while it waits for a first deadline.
    /// A run whose deadline comes later needs no wake-up: the watchdog sees it then. (Waking it
    /// on every run cost two thread switches per run, more than a short rule itself.)
    planned: Option<Instant>,
}

/// The watchdog, started on first use; `None` if its thread could not be spawned (then
/// [`late`] reads the clock instead).
fn watchdog() -> Option<&'static Watchdog> {
    static W: OnceLock<Option<&'static Watchdog>> = OnceLock::new();
    *W.get_or_init(|| {
        let w: &'static Watchdog = Box::leak(Box::new(Watchdog {
            due: Mutex::new(Due::default()),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("claimrules-rule-deadlines".into())
            .spawn(move || watch(w))
            .ok()
            .map(|_| w)
    })
}

fn watch(w: &'static Watchdog) {
    let Ok(mut due) = w.due.lock() else { return };
    loop {
        let now = Instant::now();
        while let Some(entry) = due.runs.first_entry() {
            if entry.key().0 > now {
                break;
            }
            entry.remove().store(true, Ordering::Relaxed);
        }
        let next = due.runs.keys().next().map(|(t, _)| *t);
        due.planned = next;
        due = match next {
            Some(t) => match w.wake.wait_timeout(due, t.saturating_duration_since(now)) {
                Ok((g, _)) => g,
                Err(_) => return,
            },
            None => match w.wake.wait(due) {
                Ok(g) => g,
                Err(_) => return,
            },
        };
    }
}

thread_local! {
    /// This thread's "deadline passed" flag, shared with the watchdog.
    static LATE: Arc<AtomicBool> = Arc::new(AtomicBool::new(false));
    /// The armed run's deadline and watchdog key.
    static ARMED: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Arms the deadline of the run starting on this thread.
pub(crate) fn arm(deadline: Instant) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    disarm();
    let flag = LATE.with(|l| {
        l.store(false, Ordering::Relaxed);
        l.clone()
    });
    let key = (deadline, NEXT.fetch_add(1, Ordering::Relaxed));
    ARMED.with(|a| a.set(Some(key)));
    if let Some(w) = watchdog() {
        if let Ok(mut due) = w.due.lock() {
            due.runs.insert(key, flag);
            if due.planned.is_none_or(|planned| deadline < planned) {
                due.planned = Some(deadline);
                w.wake.notify_one();
            }
        }
    }
}

/// Disarms this thread's deadline (the run ended); its flag is never set for it afterwards.
pub(crate) fn disarm() {
    if let Some(key) = ARMED.with(|a| a.take()) {
        if let Some(w) = watchdog() {
            if let Ok(mut due) = w.due.lock() {
                due.runs.remove(&key);
            }
        }
    }
    LATE.with(|l| l.store(false, Ordering::Relaxed));
}

/// Whether the deadline of the run on this thread has passed.
#[inline]
pub(crate) fn late() -> bool {
    if LATE.with(|l| l.load(Ordering::Relaxed)) {
        return true;
    }
    if watchdog().is_none() {
        return ARMED
            .with(Cell::get)
            .is_some_and(|(d, _)| Instant::now() >= d);
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Text.

/// Marker appended to text cut at its cap.
pub const TRUNCATED: &str = "…[truncated]";

/// A `fmt::Write` that keeps at most `cap` bytes and fails the formatting past them.
struct Capped {
    out: String,
    cap: usize,
    cut: bool,
}

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.cap - self.out.len();
        if s.len() <= room {
            self.out.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.out.push_str(&s[..end]);
        self.cut = true;
        Err(std::fmt::Error)
    }
}

/// `value` as a log line shows it (a string as is, anything else as rhai displays it), cut to
/// at most `cap` bytes plus [`TRUNCATED`]; formatting stops at the cap, so the cost is bounded
/// by `cap` whatever the value holds.
pub(crate) fn bounded_text(value: &Dynamic, cap: usize) -> String {
    let mut w = Capped {
        out: String::new(),
        cap,
        cut: false,
    };
    let _ = match value.read_lock::<rhai::ImmutableString>() {
        Some(s) => w.write_str(s.as_str()),
        None => write!(w, "{value}"),
    };
    if w.cut {
        w.out.push_str(TRUNCATED);
    }
    w.out
}

/// `args` formatted into at most `cap` bytes plus [`TRUNCATED`]; formatting stops at the cap.
pub(crate) fn bounded_fmt(args: std::fmt::Arguments<'_>, cap: usize) -> String {
    let mut w = Capped {
        out: String::new(),
        cap,
        cut: false,
    };
    let _ = w.write_fmt(args);
    if w.cut {
        w.out.push_str(TRUNCATED);
    }
    w.out
}

/// `text` cut to at most `cap` bytes (at a character boundary) plus [`TRUNCATED`].
pub(crate) fn cut(text: &str, cap: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= cap {
        return text.into();
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    #[test]
    fn mimalloc_options_are_set_before_main() {
        // The test binary links this module, so its `.init_array` entry ran before the harness.
        assert_eq!(
            mimalloc_options::values(),
            (0, 0),
            "(arena_eager_commit, purge_delay)"
        );
    }

    #[test]
    fn the_watchdog_flags_a_passed_deadline_and_forgets_a_disarmed_one() {
        arm(Instant::now() + Duration::from_millis(20));
        assert!(!late());
        std::thread::sleep(Duration::from_millis(60));
        assert!(late());
        disarm();
        assert!(!late());
        arm(Instant::now() + Duration::from_millis(20));
        disarm();
        std::thread::sleep(Duration::from_millis(60));
        assert!(!late(), "a disarmed deadline never fires");
    }

    #[test]
    fn an_earlier_deadline_armed_after_a_later_one_still_fires_on_time() {
        // Another thread's run with a far deadline: the watchdog plans to wake only then.
        let far = std::thread::spawn(|| {
            arm(Instant::now() + Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(300));
            let late_far = late();
            disarm();
            late_far
        });
        std::thread::sleep(Duration::from_millis(20));
        // This run's deadline comes first: arming it must wake the watchdog early.
        arm(Instant::now() + Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            late(),
            "the earlier deadline fired although a later one was planned"
        );
        disarm();
        assert!(!far.join().unwrap(), "the far deadline has not passed");
    }

    #[test]
    fn bounded_text_stops_at_its_cap() {
        let mut m = rhai::Map::new();
        for i in 0..10_000 {
            m.insert(format!("k{i}").into(), Dynamic::from("x".repeat(100)));
        }
        let t = bounded_text(&Dynamic::from_map(m), 1000);
        assert!(t.len() <= 1000 + TRUNCATED.len() && t.ends_with(TRUNCATED));
        assert_eq!(
            bounded_text(&Dynamic::from("é".repeat(10)), 5),
            format!("éé{TRUNCATED}")
        );
        assert_eq!(bounded_text(&Dynamic::from(42_i64), 5), "42");
        assert_eq!(cut("abc", 5), "abc");
    }
}

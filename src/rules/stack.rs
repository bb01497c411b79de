//! A big native stack for rule runs, mapped once per thread and reused.
//!
//! Two things in a rule recurse on the native stack: call levels and nested values, which rhai
//! sizes, clones, prints and drops recursively. A test thread or a tokio worker has 2 MiB, less
//! than a hostile rule can use within the sandbox limits (see `RUN_STACK_MIN`). Moving each run
//! to a freshly mapped stack (`stacker::maybe_grow`) cost about 11 µs per run in syscalls and
//! page faults, so each thread maps one stack the first time it needs it and keeps it. The
//! engine's stack guard reads [`remaining`] to stop a rule cleanly before even that runs out.

use std::cell::{Cell, RefCell};

/// Native stack a pipeline run is given. Call levels (64 by default) measured at most about
/// 1 MiB optimised and 5 MiB in a debug build; nested values (arrays and maps of up to 10,000
/// items each, so up to 20,000 levels) about 350 bytes per level optimised, several times that
/// in a debug build.
pub(crate) const RUN_STACK_MIN: usize = if cfg!(debug_assertions) {
    64 << 20
} else {
    16 << 20
};

thread_local! {
    /// This thread's run stack, mapped on first use.
    static STACK: RefCell<Option<RunStack>> = const { RefCell::new(None) };
    /// Lowest usable address of the stack the current run is on; 0 when it runs on the
    /// thread's own stack (then stacker knows the limit).
    static FLOOR: Cell<usize> = const { Cell::new(0) };
}

/// Native stack left to the current run, when known.
pub(crate) fn remaining() -> Option<usize> {
    match FLOOR.with(Cell::get) {
        0 => stacker::remaining_stack(),
        floor => Some((psm::stack_pointer() as usize).saturating_sub(floor)),
    }
}

/// Runs `f` with at least `RUN_STACK_MIN` of native stack: on the current stack when it has
/// that much left, else on this thread's run stack.
pub(crate) fn with_run_stack<R>(f: impl FnOnce() -> R) -> R {
    // Already on the run stack (a run started from inside a run): never switch onto it again.
    if FLOOR.with(Cell::get) != 0 || remaining().is_some_and(|left| left >= RUN_STACK_MIN) {
        return f();
    }
    run_on_own_stack(f)
}

#[cfg(all(unix, not(miri)))]
fn run_on_own_stack<R>(f: impl FnOnce() -> R) -> R {
    let base = STACK.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            *s = RunStack::map(RUN_STACK_MIN + (1 << 20));
        }
        s.as_ref().map(|s| (s.usable(), s.usable_len()))
    });
    let Some((base, len)) = base else {
        // Mapping failed (address space exhausted?): fall back to a one-off stack.
        return stacker::maybe_grow(RUN_STACK_MIN, RUN_STACK_MIN + (1 << 20), f);
    };
    let previous = FLOOR.with(|fl| fl.replace(base as usize));
    // `on_stack` must not unwind: carry a panic across the switch and resume it after.
    let result = unsafe {
        // SAFETY: `base..base + len` is a mapped, writable, page-aligned region owned by this
        // thread's `RunStack`, which is not dropped while the thread lives; this thread is not
        // already on it (it would have had enough stack left); the callback cannot unwind.
        psm::on_stack(base, len, || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        })
    };
    FLOOR.with(|fl| fl.set(previous));
    match result {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(not(all(unix, not(miri))))]
fn run_on_own_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RUN_STACK_MIN, RUN_STACK_MIN + (1 << 20), f)
}

/// A stack mapped with `mmap`, with a guard page below it so an overflow faults instead of
/// writing over other memory.
#[cfg(all(unix, not(miri)))]
struct RunStack {
    map: *mut libc::c_void,
    len: usize,
    page: usize,
}

#[cfg(all(unix, not(miri)))]
impl RunStack {
    fn map(size: usize) -> Option<RunStack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)?;
        let len = size.div_ceil(page) * page + page;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        let stack = RunStack { map, len, page };
        // SAFETY: the range lies inside the mapping made above; the first page stays PROT_NONE.
        let ok = unsafe {
            libc::mprotect(
                stack.usable().cast(),
                stack.usable_len(),
                libc::PROT_READ | libc::PROT_WRITE,
            )
        } == 0;
        ok.then_some(stack)
    }

    fn usable(&self) -> *mut u8 {
        self.map.cast::<u8>().wrapping_add(self.page)
    }

    fn usable_len(&self) -> usize {
        self.len - self.page
    }
}

#[cfg(all(unix, not(miri)))]
impl Drop for RunStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; nothing runs on it any more (the
        // thread that owns it is exiting).
        unsafe {
            libc::munmap(self.map, self.len);
        }
    }
}

//! Where a request's CPU-bound work (rules, signatures) runs: on the runtime worker that serves
//! the request, or on the blocking pool.
//!
//! Handing work to the blocking pool costs two thread wake-ups per request (the pool thread,
//! then the worker when the task is done). On the 2-core benchmark machine that hand-off cost
//! more than the rules and the ES256 signatures themselves: running them on the worker cut the
//! CPU per refresh from about 384 to 327 µs (`scripts/bench-vs-peer`, alternating runs; see the
//! README's Performance section). Work that is short and cannot wait on anything runs inline;
//! everything else keeps the blocking pool, so a worker is never held:
//!
//! - **Rules that may call out** (an `[http] allow` list, see `crate::rules::http`) always go to
//!   the pool: an HTTP call waits on the network, and a worker must never wait.
//! - **Slow work** moves to the pool as soon as it is seen: a run that took longer than
//!   [`SLOW`] sends every run to the pool for [`OFFLOAD_FOR`] after it. A rule that loops
//!   until its budget (`pipeline_budget`, 200 ms by default) holds one worker once, then no
//!   more while it keeps looping; a tenant with heavy rules or large RSA keys stays on the pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A run longer than this sends the following runs to the blocking pool: far above a normal run
/// (rules and two signatures take 0.03–1 ms), far below a looping rule's budget.
pub const SLOW: Duration = Duration::from_millis(5);
/// How long after a slow run every run goes to the blocking pool.
pub const OFFLOAD_FOR: Duration = Duration::from_secs(30);

/// The choice between inline and the blocking pool, learnt from how long runs take.
#[derive(Debug)]
pub struct CpuLane {
    /// Time origin of `offload_until`.
    epoch: Instant,
    /// Until when (ms since `epoch`) runs go to the pool; 0 when none was slow yet.
    offload_until_ms: AtomicU64,
}

impl Default for CpuLane {
    fn default() -> Self {
        CpuLane::new()
    }
}

impl CpuLane {
    /// A lane that runs inline until it sees a slow run.
    pub fn new() -> CpuLane {
        CpuLane {
            epoch: Instant::now(),
            offload_until_ms: AtomicU64::new(0),
        }
    }

    /// The process's lane, shared by the token endpoint, `/authorize` and the hooks.
    pub fn shared() -> &'static CpuLane {
        static LANE: OnceLock<CpuLane> = OnceLock::new();
        LANE.get_or_init(CpuLane::new)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a run that cannot wait on I/O would run inline now.
    pub fn inline_now(&self) -> bool {
        self.now_ms() >= self.offload_until_ms.load(Ordering::Relaxed)
    }

    /// Records how long a run took; a slow one sends the next runs to the pool.
    pub fn record(&self, took: Duration) {
        if took > SLOW {
            let until = self.now_ms().saturating_add(OFFLOAD_FOR.as_millis() as u64);
            self.offload_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Runs `f` and returns its result: inline when `may_wait` is false and no run was slow
    /// lately, else on the blocking pool (at a lower priority, [`super::cpu_bound_thread`]).
    /// `Err` only when the pool's task panicked or was cancelled.
    pub async fn run<T, F>(&'static self, may_wait: bool, f: F) -> Result<T, tokio::task::JoinError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if !may_wait && self.inline_now() {
            return Ok(self.timed(true, f));
        }
        tokio::task::spawn_blocking(move || {
            super::cpu_bound_thread();
            // Time spent waiting on the network is not CPU work a worker would have been held by.
            self.timed(!may_wait, f)
        })
        .await
    }

    /// Runs `f`, recording its thread CPU time when `record`. A thread's CPU time never exceeds
    /// the wall time, so a run whose wall time is within [`SLOW`] is not slow: its CPU time is
    /// only read when the wall time is over (reading it is a system call, the clock is not).
    fn timed<T>(&self, record: bool, f: impl FnOnce() -> T) -> T {
        if !record {
            return f();
        }
        let (cpu, wall) = (ThreadCpu::now(), Instant::now());
        let out = f();
        if wall.elapsed() > SLOW {
            self.record(cpu.elapsed());
        }
        out
    }
}

/// The calling thread's CPU time where the platform tells it (Linux), else wall time. CPU time,
/// because on a loaded machine a 100 µs run can take milliseconds of wall time while its thread
/// waits for a core, and that says nothing about the work.
struct ThreadCpu(Duration);

impl ThreadCpu {
    fn now() -> ThreadCpu {
        ThreadCpu(thread_cpu())
    }

    fn elapsed(&self) -> Duration {
        thread_cpu().saturating_sub(self.0)
    }
}

#[cfg(target_os = "linux")]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaked() -> &'static CpuLane {
        Box::leak(Box::new(CpuLane::new()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn short_work_runs_on_the_calling_thread() {
        let lane = leaked();
        let caller = std::thread::current().id();
        let ran_on = lane.run(false, || std::thread::current().id()).await;
        assert_eq!(ran_on.ok(), Some(caller));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn work_that_may_wait_goes_to_the_pool() {
        let lane = leaked();
        let caller = std::thread::current().id();
        let ran_on = lane.run(true, || std::thread::current().id()).await;
        assert_ne!(ran_on.ok(), Some(caller));
        // Waiting work says nothing about CPU work: the next short run is inline again.
        assert!(lane.inline_now());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_slow_run_sends_the_next_ones_to_the_pool() {
        let lane = leaked();
        // Busy, not asleep: what counts is the CPU the run held its thread for.
        lane.run(false, || {
            let start = ThreadCpu::now();
            while start.elapsed() <= SLOW + Duration::from_millis(1) {
                std::hint::spin_loop();
            }
        })
        .await
        .ok();
        assert!(!lane.inline_now());
        let caller = std::thread::current().id();
        let ran_on = lane.run(false, || std::thread::current().id()).await;
        assert_ne!(ran_on.ok(), Some(caller));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_run_that_sleeps_is_not_slow() {
        let lane = leaked();
        lane.run(false, || std::thread::sleep(SLOW * 2)).await.ok();
        assert!(lane.inline_now());
    }

    #[test]
    fn a_fast_run_changes_nothing_and_offloading_ends() {
        let lane = CpuLane::new();
        lane.record(Duration::from_micros(300));
        assert!(lane.inline_now());
        lane.record(SLOW * 2);
        assert!(!lane.inline_now());
        // The window is counted from the slow run: moving the deadline back ends it.
        lane.offload_until_ms
            .store(lane.now_ms(), Ordering::Relaxed);
        assert!(lane.inline_now());
    }
}

//! Process CPU time, shared by the benches that report CPU per operation
//! (`#[path = "common/cpu.rs"] mod cpu;`).

use std::time::Duration;

/// CPU time of the whole process so far (user + system, every thread).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

//! The WAL checkpointer: copies committed WAL frames into the database file on a thread of its
//! own, so the writer's commits do not wait for it.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the one
//! writer thread, and every write waits for it; with random B-tree pages (a large token table)
//! that is thousands of pages to copy (benches/large_db: 8,229 rotations/s on a full database
//! with the writer checkpointing alone, 10,698 with this thread beside it). Here a
//! `PASSIVE` checkpoint (<https://www.sqlite.org/c3ref/wal_checkpoint_v2.html>) runs every
//! [`EVERY`] while anything was committed, beside the writer and the readers, blocking neither.
//! The writer keeps a (high) automatic checkpoint: it then copies only the frames committed since
//! this thread's last pass, and, running between the writer's own transactions, it lets the next
//! transaction restart the WAL from its beginning, which a checkpoint beside a busy writer never
//! can.
//!
//! Two things keep that last checkpoint small when many distinct pages are written (a purge of
//! expired rows rewrites pages all over the file):
//! - SQLite syncs the database file only in a checkpoint that copies the whole WAL, which beside a
//!   busy writer is always the writer's own; it then flushed every page this thread had copied
//!   since (36–50 ms per sync, `strace` of `benches/large_db.rs` during a purge). While bulk
//!   writes run, this thread syncs the file itself after each pass, so the writer's sync finds
//!   little left to flush. (Not under the ordinary refresh load, whose passes copy the same few
//!   hot pages: syncing after every pass raised the refreshes' p99 in 7 of 7 alternating runs
//!   of `scripts/bench-vs-peer`; syncing only during bulk writes had the lower p99 in 3 of 4.)
//! - While bulk writes run ([`Signals::bulk`]), passes follow each other [`AGAIN`] apart instead
//!   of [`EVERY`], so the writer's checkpoint finds little left to copy. (Not always: a pass
//!   walks the whole WAL index, so back-to-back passes under the ordinary refresh load would
//!   cost a core.)
//!
//! Rotations' p99 during the purge of 1,000,000 expired rows (`benches/large_db.rs`,
//! `LIVE=500000 EXPIRED=500000`): 72 ms before these two, 61 ms with the sync alone, 10 ms with
//! both, the full database's own p99 without a purge.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Opener;

/// How often the checkpointer copies what was committed since its last pass.
pub(super) const EVERY: Duration = Duration::from_millis(250);

/// How soon the next pass follows one while bulk writes run. At 500,000 + 500,000 rows
/// (`benches/large_db.rs`) the rotations' p99 during the purge was 11.0 ms with 1 ms, 13.4 ms
/// with 5 ms and 21.1 ms with 20 ms, and the purge took 63, 61 and 54 s.
pub(super) const AGAIN: Duration = Duration::from_millis(1);
/// How long after the last bulk write the passes stay [`AGAIN`] apart.
const BULK_LINGERS: Duration = Duration::from_millis(100);

/// What the store tells the checkpointer; shared by the store, the writer and the thread.
#[derive(Debug)]
pub(in crate::store) struct Signals {
    /// Set by the writer after each commit; the next pass clears it.
    dirty: AtomicBool,
    /// When the last bulk write was queued, in milliseconds after `epoch` (0: none yet).
    bulk_at: AtomicU64,
    epoch: Instant,
}

impl Signals {
    /// No commit and no bulk write yet.
    pub(in crate::store) fn new() -> Signals {
        Signals {
            dirty: AtomicBool::new(false),
            bulk_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Tells the next pass that something was committed.
    pub(super) fn committed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// A write that changes many distinct pages is queued (a purge step): passes run
    /// back-to-back until [`BULK_LINGERS`] after the last one.
    pub(in crate::store) fn bulk(&self) {
        self.bulk_at.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether a bulk write was queued less than [`BULK_LINGERS`] ago.
    fn in_bulk(&self) -> bool {
        let at = self.bulk_at.load(Ordering::Relaxed);
        at > 0 && self.now_ms().saturating_sub(at) < BULK_LINGERS.as_millis() as u64
    }

    /// Milliseconds since `epoch`, plus one so that a bulk write at once is not "none yet".
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// The running checkpointer; dropping it stops the thread (its connection closes with it).
pub(super) struct Checkpointer {
    signals: Arc<Signals>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread. Without it (the thread or its connection could not start) the writer's
    /// automatic checkpoint still bounds the WAL, so this only logs.
    pub(super) fn start(opener: Opener, signals: Arc<Signals>) -> Checkpointer {
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = signals.clone();
        let thread = std::thread::Builder::new()
            .name("claimrules-checkpoint".into())
            .spawn(move || run(&opener, &shared, &stopped));
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the SQLite checkpoint thread");
                None
            }
        };
        Checkpointer {
            signals,
            stop: Some(stop),
            thread,
        }
    }

    /// Tells the next pass that something was committed.
    pub(super) fn committed(&self) {
        self.signals.committed();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(opener: &Opener, signals: &Signals, stopped: &mpsc::Receiver<()>) {
    let conn = match opener.open() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "the SQLite checkpoint thread cannot open the database");
            return;
        }
    };
    // Without it the writer's checkpoint syncs what this thread copied, as it did before.
    let file = std::fs::File::open(&opener.path)
        .inspect_err(|e| tracing::warn!(error = %e, "the SQLite checkpoint thread cannot sync"))
        .ok();
    // The WAL frames copied by the last synced pass (`PRAGMA wal_checkpoint`'s third column:
    // frames checkpointed since the WAL restarted).
    let mut synced = 0;
    loop {
        let bulk = signals.in_bulk();
        let wait = if bulk { AGAIN } else { EVERY };
        // Ends when the checkpointer is dropped (the sender is gone).
        if let Err(mpsc::RecvTimeoutError::Disconnected) | Ok(()) = stopped.recv_timeout(wait) {
            return;
        }
        if !signals.dirty.swap(false, Ordering::Relaxed) {
            continue;
        }
        // Busy (the writer's own checkpoint is running: -1) or failed: the next pass retries.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(2)) {
            Ok(copied) if bulk && copied > 0 && copied != synced => {
                if let Some(file) = &file {
                    if let Err(e) = file.sync_data() {
                        tracing::debug!(error = %e, "database file sync failed");
                    }
                }
                synced = copied;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "WAL checkpoint skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bulk write puts the passes [`AGAIN`] apart at once, and only for [`BULK_LINGERS`]; a
    /// commit marks the WAL dirty for one pass.
    #[test]
    fn a_bulk_write_hurries_the_passes_for_a_while() {
        let signals = Signals::new();
        assert!(!signals.in_bulk(), "no bulk write yet");
        signals.bulk();
        assert!(signals.in_bulk(), "right after a bulk write");
        std::thread::sleep(BULK_LINGERS + Duration::from_millis(30));
        assert!(
            !signals.in_bulk(),
            "{BULK_LINGERS:?} after the last bulk write"
        );
        signals.bulk();
        assert!(signals.in_bulk(), "a later bulk write hurries them again");

        assert!(!signals.dirty.load(Ordering::Relaxed));
        signals.committed();
        assert!(signals.dirty.swap(false, Ordering::Relaxed));
        assert!(!signals.dirty.load(Ordering::Relaxed));
    }
}

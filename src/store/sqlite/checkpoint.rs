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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Opener;

/// How often the checkpointer copies what was committed since its last pass.
pub(super) const EVERY: Duration = Duration::from_millis(250);

/// The running checkpointer; dropping it stops the thread (its connection closes with it).
pub(super) struct Checkpointer {
    /// Set by the writer after each commit; the next pass clears it.
    dirty: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread. Without it (the thread or its connection could not start) the writer's
    /// automatic checkpoint still bounds the WAL, so this only logs.
    pub(super) fn start(opener: Opener) -> Checkpointer {
        let dirty = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = dirty.clone();
        let thread = std::thread::Builder::new()
            .name("claimrules-checkpoint".into())
            .spawn(move || run(&opener, &flag, &stopped));
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the SQLite checkpoint thread");
                None
            }
        };
        Checkpointer {
            dirty,
            stop: Some(stop),
            thread,
        }
    }

    /// Tells the next pass that something was committed.
    pub(super) fn committed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
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

fn run(opener: &Opener, dirty: &AtomicBool, stopped: &mpsc::Receiver<()>) {
    let conn = match opener.open() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "the SQLite checkpoint thread cannot open the database");
            return;
        }
    };
    // Ends when the checkpointer is dropped (the sender is gone).
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        if dirty.swap(false, Ordering::Relaxed) {
            // Busy (the writer's own checkpoint is running) or failed: the next pass retries.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "WAL checkpoint skipped");
            }
        }
    }
}

//! The thread that owns the SQLite connection: reads at once, writes in group commits.
//!
//! Every request of the store becomes a [`Job`] sent over one channel. The thread blocks until a
//! job arrives, then takes everything queued at that moment: reads run at once (they see only
//! committed data, as no transaction is open between batches), writes run together in one
//! `BEGIN IMMEDIATE` transaction that is committed once — one fsync for the whole batch. A write
//! that fails on its own (a duplicate key, an unknown row) leaves the others intact: each write
//! is one statement, or undoes its own partial change (a savepoint or a compensating statement);
//! any other failure rolls the whole batch back, fails all of it and replaces the connection.
//! Writes that arrive while a batch runs its statements join it before the commit (a read that
//! arrives then waits for the commit, so it still sees committed data only): the commit and its
//! fsync are the batch's fixed cost, and every write that shares them costs less.
//! Callers get their answer only after the commit returned, except those that asked for an
//! early answer ([`super::SqliteStore::redeem_code_early`]), who get a [`super::Committed`] to
//! wait on instead.
//!
//! Why one thread: each hand-off between threads costs a kernel task switch, which with sqlx
//! (tokio worker -> connection thread -> writer task -> connection thread and back) was the
//! largest share of the CPU a refresh-token rotation costs beyond its signatures. Here a request
//! is one channel send and one wake-up for the answer.

use std::collections::VecDeque;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpointer;
use super::{db, Opener};
use crate::store::StoreError;

/// Most writes committed together in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Scheduler yields before a batch when the previous one served several callers (see
/// [`Writer::gather`]).
const YIELDS: usize = 3;

/// A read: runs on the connection outside any transaction.
pub(super) type ReadJob = Box<dyn FnOnce(Result<&Connection, &StoreError>) + Send>;

/// How a write ended, as far as its batch is concerned.
pub(super) enum Outcome {
    /// Done (or refused without a change): the batch goes on.
    Done,
    /// Failed in a way that may have broken the transaction: the batch is rolled back.
    Broken(StoreError),
}

/// A write, run inside the batch transaction and answered when the batch ended.
pub(super) trait WriteJob: Send {
    /// Runs the write on the connection inside the open transaction.
    fn run(&mut self, c: &Connection) -> Outcome;
    /// Answers the caller once the batch ended: `None` after the commit, else the error that
    /// undid the batch.
    fn finish(self: Box<Self>, ended: Option<&StoreError>);
    /// Answers a write that never ran.
    fn fail(self: Box<Self>, e: &StoreError);
}

/// One request for the connection thread.
pub(super) enum Job {
    /// A read, answered at once.
    Read(ReadJob),
    /// A write, answered after its batch's commit.
    Write(Box<dyn WriteJob>),
}

/// Where a write's result goes.
pub(super) enum Answer<T> {
    /// After the commit: the result, or the batch's error.
    Committed {
        /// The caller.
        tx: oneshot::Sender<Result<T, StoreError>>,
        /// The result while the batch is open.
        result: Option<Result<T, StoreError>>,
    },
    /// At once, and the commit's outcome separately.
    Early {
        /// The result, sent (taken) as soon as the write ran.
        result: Option<oneshot::Sender<Result<T, StoreError>>>,
        /// The batch's end.
        commit: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A write: the statements `f` and where their result goes.
pub(super) struct Write<T, F> {
    /// The statements; taken when run.
    pub(super) f: Option<F>,
    /// Whether a failure of `f` is undone by a savepoint (see [`super::SqliteStore::write`]).
    pub(super) savepoint: bool,
    /// Where the result goes.
    pub(super) answer: Answer<T>,
    /// When the caller queued the write.
    pub(super) queued: Instant,
}

impl<T, F> WriteJob for Write<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, c: &Connection) -> Outcome {
        metrics::histogram!("claimrules_store_pool_wait_seconds")
            .record(self.queued.elapsed().as_secs_f64());
        let Some(f) = self.f.take() else {
            return Outcome::Done;
        };
        let (result, outcome) = if self.savepoint {
            match statement(c, "SAVEPOINT job") {
                Err(e) => (Err(e.clone()), Outcome::Broken(e)),
                Ok(()) => {
                    let result = f(c);
                    let outcome = match &result {
                        Ok(_) => end(c, "RELEASE job"),
                        Err(_) => match end(c, "ROLLBACK TO job") {
                            Outcome::Done => end(c, "RELEASE job"),
                            broken => broken,
                        },
                    };
                    (result, outcome)
                }
            }
        } else {
            let result = f(c);
            let outcome = match &result {
                Ok(_)
                | Err(
                    StoreError::Conflict { .. }
                    | StoreError::NotFound(_)
                    | StoreError::Corrupt { .. },
                ) => Outcome::Done,
                Err(e) => Outcome::Broken(e.clone()),
            };
            (result, outcome)
        };
        match &mut self.answer {
            Answer::Committed { result: slot, .. } => *slot = Some(result),
            Answer::Early { result: tx, .. } => {
                // The caller may have gone away (request cancelled): nothing to tell then.
                if let Some(tx) = tx.take() {
                    let _ = tx.send(result);
                }
            }
        }
        outcome
    }

    fn finish(self: Box<Self>, ended: Option<&StoreError>) {
        match self.answer {
            Answer::Committed { tx, result } => {
                let _ = tx.send(match (ended, result) {
                    (Some(e), _) => Err(e.clone()),
                    (None, Some(result)) => result,
                    (None, None) => Err(never_ran()),
                });
            }
            Answer::Early { commit, .. } => {
                let _ = commit.send(ended.map_or(Ok(()), |e| Err(e.clone())));
            }
        }
    }

    fn fail(self: Box<Self>, e: &StoreError) {
        match self.answer {
            Answer::Committed { tx, .. } => {
                let _ = tx.send(Err(e.clone()));
            }
            Answer::Early { result, commit } => {
                if let Some(tx) = result {
                    let _ = tx.send(Err(e.clone()));
                }
                let _ = commit.send(Err(e.clone()));
            }
        }
    }
}

fn never_ran() -> StoreError {
    StoreError::unavailable("the SQLite write was not run")
}

/// Runs one statement without parameters or rows (transaction control).
fn statement(c: &Connection, sql: &str) -> Result<(), StoreError> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(db)
}

/// Ends a savepoint; failing means the transaction is gone.
fn end(c: &Connection, sql: &str) -> Outcome {
    match statement(c, sql) {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Broken(e),
    }
}

/// The connection thread's state.
pub(super) struct Writer {
    conn: Option<Connection>,
    opener: Opener,
    rx: mpsc::Receiver<Job>,
    /// Writes waiting for a batch, oldest first.
    writes: VecDeque<Box<dyn WriteJob>>,
    /// How many writes the previous batch answered.
    last_batch: usize,
    /// Told of every commit.
    checkpointer: Checkpointer,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        opener: Opener,
        rx: mpsc::Receiver<Job>,
        checkpointer: Checkpointer,
    ) -> Writer {
        Writer {
            conn: Some(conn),
            opener,
            rx,
            writes: VecDeque::new(),
            last_batch: 0,
            checkpointer,
        }
    }

    /// Serves jobs until every sender (every clone of the store) is gone.
    pub(super) fn run(mut self) {
        loop {
            if self.writes.is_empty() {
                match self.rx.blocking_recv() {
                    Some(job) => self.take(job),
                    None => break,
                }
            }
            self.gather();
            if !self.writes.is_empty() {
                self.batch();
            }
        }
    }

    /// Takes what is queued now (writes up to [`MAX_BATCH`]). When the previous batch served
    /// several callers, they are likely queueing their next write this very moment: yielding
    /// the CPU a few times lets those join this batch instead of waiting one more fsync.
    fn gather(&mut self) {
        let mut yields = if self.last_batch > 1 { YIELDS } else { 0 };
        while self.writes.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(job) => self.take(job),
                Err(_) if yields > 0 && self.writes.len() < self.last_batch => {
                    yields -= 1;
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
    }

    /// Runs a read at once; keeps a write for the batch.
    fn take(&mut self, job: Job) {
        match job {
            Job::Write(w) => self.writes.push_back(w),
            Job::Read(read) => match connect(&mut self.conn, &self.opener) {
                Ok(c) => read(Ok(c)),
                Err(e) => read(Err(&e)),
            },
        }
    }

    /// Runs up to [`MAX_BATCH`] waiting writes in one transaction. Writes not run because the
    /// batch broke off stay waiting for the next one.
    fn batch(&mut self) {
        let started = Instant::now();
        let c = match connect(&mut self.conn, &self.opener) {
            Ok(c) => c,
            Err(e) => {
                for w in self.writes.drain(..) {
                    w.fail(&e);
                }
                return;
            }
        };
        if let Err(e) = statement(c, "BEGIN IMMEDIATE") {
            // Nothing ran: the callers of this batch get the error.
            let n = self.writes.len().min(MAX_BATCH);
            for w in self.writes.drain(..n) {
                w.fail(&e);
            }
            replace_connection(&mut self.conn, &e);
            return;
        }
        let mut ran: Vec<Box<dyn WriteJob>> = Vec::with_capacity(self.writes.len().min(MAX_BATCH));
        let mut failure = None;
        // Reads that arrived while the transaction was open: run after it ended.
        let mut deferred: Vec<ReadJob> = Vec::new();
        while ran.len() < MAX_BATCH {
            let mut w = match self.writes.pop_front() {
                Some(w) => w,
                // Writes queued while this batch ran join it.
                None => match self.rx.try_recv() {
                    Ok(Job::Write(w)) => w,
                    Ok(Job::Read(read)) => {
                        deferred.push(read);
                        continue;
                    }
                    Err(_) => break,
                },
            };
            let outcome = w.run(c);
            ran.push(w);
            if let Outcome::Broken(e) = outcome {
                failure = Some(e);
                break;
            }
        }
        let ended = match failure {
            Some(e) => Err(e),
            None => statement(c, "COMMIT"),
        };
        if ended.is_err() {
            // May fail when SQLite already rolled back on its own; the connection goes anyway.
            let _ = statement(c, "ROLLBACK");
        }
        metrics::histogram!("claimrules_store_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("claimrules_store_batch_size").record(ran.len() as f64);
        self.last_batch = ran.len();
        if ended.is_ok() {
            self.checkpointer.committed();
        }
        let ended = ended.err();
        for w in ran {
            w.finish(ended.as_ref());
        }
        if let Some(e) = ended {
            replace_connection(&mut self.conn, &e);
        }
        for read in deferred {
            self.take(Job::Read(read));
        }
    }
}

/// The connection, reopened if the last one was dropped after a failure.
fn connect<'c>(
    conn: &'c mut Option<Connection>,
    opener: &Opener,
) -> Result<&'c Connection, StoreError> {
    if conn.is_none() {
        *conn = Some(opener.open()?);
    }
    conn.as_ref().ok_or_else(never_ran)
}

/// Drops a connection in an unknown state; the next job opens a fresh one.
fn replace_connection(conn: &mut Option<Connection>, e: &StoreError) {
    tracing::warn!(error = %e, "SQLite write batch failed; reconnecting");
    *conn = None;
}

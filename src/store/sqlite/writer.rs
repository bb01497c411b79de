//! The SQLite writer: one task owns the only read-write connection and commits the writes
//! queued at a moment together (group commit).
//!
//! SQLite admits one writer at a time, and with `synchronous = FULL` every commit costs an fsync.
//! So all writes go through this task: it takes every write queued at that moment, runs them in
//! one `BEGIN IMMEDIATE` transaction and commits once. A write that fails on its own (a duplicate
//! key, an unknown row) leaves the others intact: each write is one statement, or undoes its own
//! partial change (a savepoint or a compensating statement); any other failure rolls the whole
//! batch back and fails all of it. Every caller gets its answer only after that commit returned,
//! so durability is unchanged while concurrent writes share one fsync. (The one exception,
//! [`Writer::write_early`], hands its answer over before the commit together with a
//! [`Committed`] to wait on, so the token endpoint signs while the fsync runs and still answers
//! only after it.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::ConnectOptions;
use tokio::sync::{mpsc, oneshot};

use super::db;
use crate::store::{Committed, StoreError};

/// Most writes committed together in one transaction.
const MAX_BATCH: usize = 256;
/// Scheduler yields before the writer takes a batch (see `writer_loop`).
const WRITER_YIELDS: usize = 2;
/// Queued writes waiting for the writer before callers wait for room.
const QUEUE: usize = 4096;

pub(super) type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;
/// Called once the batch's transaction ended: `None` after a successful commit, else the error
/// that undid the batch.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// How a write ended, as far as the batch is concerned.
enum Outcome {
    /// Done (or refused without a change): the batch goes on.
    Done,
    /// Failed in a way that may have broken the transaction: the batch is rolled back.
    Broken(StoreError),
}

/// One write, run by the writer task on its connection inside the batch transaction. Returns its
/// outcome and how to answer the caller. Given an error instead of a connection, it answers the
/// caller with that error at once.
type Job = Box<
    dyn for<'c> FnOnce(Result<&'c mut SqliteConnection, StoreError>) -> BoxFut<'c, (Outcome, Reply)>
        + Send,
>;

/// The queue to the writer task; cheap to clone, every clone feeds the same task.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on `conn`; `options` reconnects after a failed batch.
    pub(super) fn spawn(conn: SqliteConnection, options: SqliteConnectOptions) -> Writer {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer_loop(conn, options, rx));
        Writer { jobs }
    }

    /// Queues a write for the writer task and waits until it is committed. With `savepoint`, a
    /// write that fails is undone on its own (for writes of several statements that may fail
    /// after changing something); without, `f` must leave nothing behind when it fails with
    /// `Conflict`, `NotFound` or `Corrupt`.
    pub(super) async fn write<T, F>(&self, savepoint: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (result, committed) = self.write_early(savepoint, f).await;
        // The batch's end decides: a rolled-back batch fails every write in it.
        committed.wait().await?;
        result
    }

    /// Like [`Writer::write`], but answers as soon as `f` ran inside the open transaction;
    /// the [`Committed`] resolves once the batch is committed (or fails if it was rolled back).
    pub(super) async fn write_early<T, F>(
        &self,
        savepoint: bool,
        f: F,
    ) -> (Result<T, StoreError>, Committed)
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (early_tx, early_rx) = oneshot::channel::<Result<T, StoreError>>();
        let (commit_tx, commit_rx) = oneshot::channel::<Result<(), StoreError>>();
        let queued = std::time::Instant::now();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                metrics::histogram!("claimrules_store_pool_wait_seconds")
                    .record(queued.elapsed().as_secs_f64());
                let nothing: Reply = Box::new(|_| {});
                // The caller may have gone away (request cancelled): nothing to tell then.
                let conn = match conn {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = early_tx.send(Err(e.clone()));
                        let _ = commit_tx.send(Err(e));
                        return (Outcome::Done, nothing);
                    }
                };
                if savepoint {
                    if let Err(e) = sqlx::query("SAVEPOINT job").execute(&mut *conn).await {
                        let e = db(e);
                        let _ = early_tx.send(Err(e.clone()));
                        let _ = commit_tx.send(Err(e.clone()));
                        return (Outcome::Broken(e), nothing);
                    }
                }
                let result = f(&mut *conn).await;
                let outcome = match (&result, savepoint) {
                    (Ok(_), false) => Outcome::Done,
                    (Ok(_), true) => end_savepoint(conn, "RELEASE job").await,
                    (Err(_), true) => match end_savepoint(conn, "ROLLBACK TO job").await {
                        Outcome::Done => end_savepoint(conn, "RELEASE job").await,
                        broken => broken,
                    },
                    (
                        Err(
                            StoreError::Conflict { .. }
                            | StoreError::NotFound(_)
                            | StoreError::Corrupt { .. },
                        ),
                        false,
                    ) => Outcome::Done,
                    (Err(e), false) => Outcome::Broken(e.clone()),
                };
                let _ = early_tx.send(result);
                let reply: Reply = Box::new(move |ended: Option<&StoreError>| {
                    let _ = commit_tx.send(match ended {
                        Some(e) => Err(e.clone()),
                        None => Ok(()),
                    });
                });
                (outcome, reply)
            })
        });
        if self.jobs.send(job).await.is_err() {
            return (Err(writer_gone()), Committed::failed(writer_gone()));
        }
        let result = early_rx.await.unwrap_or_else(|_| Err(writer_gone()));
        (result, Committed::pending(commit_rx))
    }
}

fn writer_gone() -> StoreError {
    StoreError::unavailable("the SQLite writer has stopped")
}

/// The writer task: runs queued writes in batches, one transaction (one fsync) per batch.
async fn writer_loop(
    conn: SqliteConnection,
    options: SqliteConnectOptions,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut conn = Some(conn);
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(job) => pending.push_back(job),
                // Every Store clone is gone.
                None => break,
            }
        }
        // Let the callers just answered by the previous commit queue their next write, so it
        // joins this batch instead of waiting one more fsync (measured: 16 writers went from
        // ~10.7 to ~16 writes per commit). Costs a few microseconds when idle.
        for _ in 0..WRITER_YIELDS {
            tokio::task::yield_now().await;
        }
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => break,
            }
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match options.connect().await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let e = db(e);
                    for job in pending.drain(..) {
                        fail_unrun(job, &e).await;
                    }
                    continue;
                }
            },
        };
        if let Err(e) = run_batch(c, &mut pending).await {
            // The connection is in an unknown state: start afresh with a new one.
            tracing::warn!(error = %e, "SQLite write batch failed; reconnecting");
            conn = None;
        }
    }
}

/// Runs a savepoint statement; failing means the transaction is gone.
async fn end_savepoint(c: &mut SqliteConnection, sql: &'static str) -> Outcome {
    match sqlx::query(sql).execute(&mut *c).await {
        Ok(_) => Outcome::Done,
        Err(e) => Outcome::Broken(db(e)),
    }
}

/// Answers a job that never ran with `e`.
async fn fail_unrun(job: Job, e: &StoreError) {
    let (_, reply) = job(Err(e.clone())).await;
    reply(Some(e));
}

/// Runs up to [`MAX_BATCH`] pending jobs in one transaction. Jobs not yet run when the batch is
/// abandoned stay pending. Returns an error only when the connection should be replaced.
async fn run_batch(
    c: &mut SqliteConnection,
    pending: &mut VecDeque<Job>,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *c).await {
        let e = db(e);
        // Nothing ran: the callers of this batch get the error.
        let n = pending.len().min(MAX_BATCH);
        for job in pending.drain(..n).collect::<Vec<_>>() {
            fail_unrun(job, &e).await;
        }
        return Err(e);
    }
    let mut replies: Vec<Reply> = Vec::new();
    let mut failure: Option<StoreError> = None;
    while replies.len() < MAX_BATCH {
        let Some(job) = pending.pop_front() else {
            break;
        };
        let (outcome, reply) = job(Ok(&mut *c)).await;
        replies.push(reply);
        if let Outcome::Broken(e) = outcome {
            failure = Some(e);
            break;
        }
    }
    let commit = match failure {
        Some(e) => Err(e),
        None => sqlx::query("COMMIT").execute(&mut *c).await.map_err(db),
    };
    metrics::histogram!("claimrules_store_commit_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("claimrules_store_batch_size").record(replies.len() as f64);
    match commit {
        Ok(_) => {
            for reply in replies {
                reply(None);
            }
            Ok(())
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
            for reply in replies {
                reply(Some(&e));
            }
            Err(e)
        }
    }
}

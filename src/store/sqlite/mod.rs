//! The SQLite engine, on rusqlite: one dedicated thread owns the only connection.
//!
//! Settings: WAL (readers in other processes never block the writer), `synchronous = FULL` (the
//! WAL is fsynced at every commit, so a write acknowledged to a caller survives a crash of the
//! process and of the machine), `busy_timeout` 5 s (another process holding the write lock is
//! waited for), foreign keys on. Statements are prepared once per connection and cached.
//!
//! Reads do not queue for that thread: WAL lets readers run beside the writer, so a read runs
//! at once on the caller's thread, on one of a few read-only connections kept for reuse
//! ([`Readers`]). A read needs microseconds (every one is an indexed lookup); the hand-off to
//! the connection thread and back cost more than that in wake-ups and context switches.
//!
//! SQLite admits one writer at a time, and with `synchronous = FULL` every commit costs an fsync.
//! So the thread runs every write queued at a moment in one transaction and commits once — group
//! commit ([`writer`]). Every caller gets its answer only after that commit returned, so
//! durability is unchanged while concurrent writes share one fsync. (The one exception,
//! [`SqliteStore::redeem_code_early`], hands its answer over before the commit together with a
//! [`Committed`] to wait on, so the token endpoint signs while the fsync runs and still answers
//! only after it.)

mod accounts;
mod checkpoint;
mod stmt;
mod tokens;
mod writer;

#[cfg(all(test, unix))]
mod tests;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, Mutex};

use self::writer::{Answer, Job, Write, Writer};
use super::migrate::{CURRENT_VERSION, RECORD_VERSION, SQLITE};
use super::{Cause, Committed, StoreError};

/// Requests queued for the connection thread before callers wait for room.
const QUEUE: usize = 4096;
/// How long a statement waits for another process's lock before failing as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection: every statement of this engine.
const STATEMENTS: usize = 64;
/// WAL frames (pages) after which a commit checkpoints them into the database file. SQLite's
/// default is 1,000; a refresh rotation rewrites the same few hot B-tree pages, and a checkpoint
/// copies each page's last version once, so checkpointing a tenth as often copies about a tenth
/// as much (measured: the checkpoint was 5.8 % of the server's CPU per refresh at 1,000). The
/// copying itself is done beside the writer ([`checkpoint`]); the writer's checkpoint copies what
/// is left and lets the WAL restart. The WAL grows to about 40 MiB with 4 KiB pages.
const WAL_AUTOCHECKPOINT: u32 = 10_000;
/// The WAL file is truncated back to this size after a checkpoint resets it (bytes), so a burst
/// does not leave a large file behind.
const WAL_SIZE_LIMIT: i64 = 64 << 20;
/// Idle read connections kept for reuse (about one per thread that reads at the same time).
const IDLE_READERS: usize = 8;

/// SQLite store: the channel to the connection thread, the read connections, the in-process key
/// lock and the checkpointer's signals.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    key_lock: Arc<Mutex<()>>,
    /// What the checkpoint thread is told of bulk writes ([`checkpoint::Signals::bulk`]).
    checkpoint: Arc<checkpoint::Signals>,
}

/// Read-only connections (`query_only`), each used by one caller at a time: taken from the idle
/// list or opened, and put back after a read that did not fail on the connection itself.
struct Readers {
    opener: Opener,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl Readers {
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
        let conn = match idle {
            Some(c) => c,
            None => self.opener.open_reader()?,
        };
        let result = f(&conn);
        // A connection that failed (I/O, corruption) is dropped, not reused: the next read opens
        // a fresh one, as the connection thread reopens its own.
        let broken = matches!(
            result,
            Err(StoreError::Unavailable { .. } | StoreError::Database { .. })
        );
        if !broken {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < IDLE_READERS {
                    idle.push(conn);
                }
            }
        }
        result
    }
}

/// Maps a rusqlite error, telling connection trouble (`Unavailable`) and duplicates
/// (`Conflict`) apart from other failures; the rusqlite error is kept as the source.
pub(super) fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    let (conflict, transient) = match &e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let code = failure.extended_code;
            let unique =
                code == ffi::SQLITE_CONSTRAINT_UNIQUE || code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY;
            (
                unique.then(|| message.clone().unwrap_or_else(|| e.to_string())),
                transient(code),
            )
        }
        _ => (None, false),
    };
    let message = e.to_string();
    let source: Cause = Arc::new(e);
    match conflict {
        Some(conflict) => StoreError::conflict(conflict, Some(source)),
        None if transient => StoreError::Unavailable {
            message,
            source: Some(source),
        },
        None => StoreError::Database { source },
    }
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6) after busy_timeout, SQLITE_IOERR (10), SQLITE_CANTOPEN
/// (14); extended codes keep the primary code in their low byte.
fn transient(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 10 | 14)
}

fn writer_gone() -> StoreError {
    StoreError::unavailable("the SQLite writer has stopped")
}

/// Opens (and reopens, after a failure) the connection with this engine's settings.
#[derive(Clone)]
pub(super) struct Opener {
    pub(super) path: PathBuf,
}

impl Opener {
    pub(super) fn open(&self) -> Result<Connection, StoreError> {
        // NO_MUTEX: only the connection thread ever touches it. No URI: a file named `file:…`
        // is a file.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let c = Connection::open_with_flags(&self.path, flags).map_err(db)?;
        c.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        c.set_prepared_statement_cache_capacity(STATEMENTS);
        c.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(db)?;
        c.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        c.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        c.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)
            .map_err(db)?;
        c.pragma_update_and_check(None, "journal_size_limit", WAL_SIZE_LIMIT, |r| {
            r.get::<_, i64>(0)
        })
        .map_err(db)?;
        Ok(c)
    }

    /// A read connection: the file exists and is in WAL mode (the connection thread set it, and
    /// it persists in the file); `query_only` makes any write through it an error.
    fn open_reader(&self) -> Result<Connection, StoreError> {
        // NO_MUTEX: one caller at a time (`Readers`). READ_WRITE: a WAL reader writes the
        // `-shm` index.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let c = Connection::open_with_flags(&self.path, flags).map_err(db)?;
        c.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        c.set_prepared_statement_cache_capacity(STATEMENTS);
        c.pragma_update(None, "query_only", "ON").map_err(db)?;
        Ok(c)
    }
}

/// The file named by a `sqlite:` URL: `sqlite://PATH` or `sqlite:PATH`, percent-decoded (for a
/// `?` or `#` in the name), with the query parameters `mode` and `cache` accepted as sqlx did.
fn url_path(url: &str, shown: &str) -> Result<PathBuf, StoreError> {
    let invalid = |why: String| StoreError::InvalidUrl {
        message: format!("{shown}: {why}"),
        source: None,
    };
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut memory = file == ":memory:";
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match (&*key, &*value) {
            ("mode", "memory") => memory = true,
            ("mode", "ro" | "rw" | "rwc") | ("cache", "private" | "shared") => {}
            ("mode" | "cache", _) => {
                return Err(invalid(format!("unknown value {value:?} for `{key}`")))
            }
            _ => return Err(invalid(format!("unknown query parameter `{key}`"))),
        }
    }
    if memory {
        return Err(invalid(
            "in-memory SQLite is not supported, name a file".into(),
        ));
    }
    let file = percent_decode(file).ok_or_else(|| invalid("bad percent-encoding".into()))?;
    if file.is_empty() {
        return Err(invalid("no file named".into()));
    }
    Ok(PathBuf::from(file))
}

/// `%XX` escapes decoded; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

impl SqliteStore {
    /// Opens `sqlite://…` (file created if missing; in-memory databases are refused: the data
    /// would not outlive the connection, and tokens must outlive a restart).
    pub(crate) async fn open_url(url: &str) -> Result<SqliteStore, StoreError> {
        let path = url_path(url, &super::redact_url(url))?;
        crate::datadir::prepare_database(&path)?;
        Self::open_with(path).await
    }

    /// Opens the database file at `path`, creating it (`0600`, so SQLite's `-wal` and `-shm`
    /// files are `0600` too) if missing.
    pub(crate) async fn open_file(path: &Path) -> Result<SqliteStore, StoreError> {
        crate::datadir::prepare_database(path)?;
        Self::open_with(path.to_path_buf()).await
    }

    /// Starts the connection thread, which opens and migrates the database before it serves.
    async fn open_with(path: PathBuf) -> Result<SqliteStore, StoreError> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        let checkpoint = Arc::new(checkpoint::Signals::new());
        let signals = checkpoint.clone();
        let readers = Arc::new(Readers {
            opener: Opener { path: path.clone() },
            idle: std::sync::Mutex::new(Vec::new()),
        });
        std::thread::Builder::new()
            .name("claimrules-sqlite".into())
            .spawn(move || {
                let opener = Opener { path };
                let conn = opener.open().and_then(|c| migrate(&c).map(|()| c));
                match conn {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        let checkpointer = checkpoint::Checkpointer::start(opener.clone(), signals);
                        Writer::new(conn, opener, rx, checkpointer).run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable {
                message: format!("cannot start the SQLite thread: {e}"),
                source: Some(Arc::new(e)),
            })?;
        ready_rx.await.unwrap_or_else(|_| Err(writer_gone()))?;
        Ok(SqliteStore {
            jobs,
            readers,
            key_lock: Arc::new(Mutex::new(())),
            checkpoint,
        })
    }

    /// Runs `f` at once on a read connection ([`Readers`]): it sees committed data only, as a
    /// read on the connection thread (which runs reads between its transactions) did.
    async fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.readers.read(f)
    }

    /// Runs `f` on the connection thread outside any transaction: a read that also proves the
    /// thread and its connection serve (the readiness probe).
    async fn read_on_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Read(Box::new(move |c| {
            let _ = tx.send(c.map_err(Clone::clone).and_then(f));
        }));
        self.jobs.send(job).await.map_err(|_| writer_gone())?;
        rx.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Queues a write for the connection thread and waits until it is committed. With
    /// `savepoint`, a write that fails is undone on its own (for writes of several statements
    /// that may fail after changing something); without, `f` must leave nothing behind when it
    /// fails with `Conflict`, `NotFound` or `Corrupt`.
    async fn write<T, F>(&self, savepoint: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let answer = Answer::Committed { tx, result: None };
        self.queue(savepoint, f, answer).await?;
        rx.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Like [`SqliteStore::write`], but answers as soon as `f` ran inside the open transaction;
    /// the [`Committed`] resolves once the batch is committed (or fails if it was rolled back).
    async fn write_early<T, F>(&self, f: F) -> (Result<T, StoreError>, Committed)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (result_tx, result_rx) = oneshot::channel();
        let (commit_tx, commit_rx) = oneshot::channel();
        let answer = Answer::Early {
            result: Some(result_tx),
            commit: commit_tx,
        };
        if let Err(e) = self.queue(false, f, answer).await {
            return (Err(e.clone()), Committed::failed(e));
        }
        let result = result_rx.await.unwrap_or_else(|_| Err(writer_gone()));
        (result, Committed::pending(commit_rx))
    }

    async fn queue<T, F>(&self, savepoint: bool, f: F, answer: Answer<T>) -> Result<(), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let job = Write {
            f: Some(f),
            savepoint,
            answer,
            queued: Instant::now(),
        };
        self.jobs
            .send(Job::Write(Box::new(job)))
            .await
            .map_err(|_| writer_gone())
    }

    pub(crate) async fn with_key_lock<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        // One SQLite file serves one instance: an in-process lock is enough. (A database-level
        // lock would hold the single write connection that `f` itself needs.)
        let _guard = self.key_lock.lock().await;
        f().await
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.read_on_writer(|c| stmt::one(c, "SELECT 1", [], |_| Ok(())))
            .await
    }
}

/// Brings the schema up to date ([`super::migrate`]) in one `BEGIN IMMEDIATE` transaction
/// (which also keeps another process from migrating at the same time).
fn migrate(c: &Connection) -> Result<(), StoreError> {
    c.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
    let result = migrate_in_transaction(c);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = c.execute_batch(end).map_err(db);
    result.and(ended)
}

fn migrate_in_transaction(c: &Connection) -> Result<(), StoreError> {
    c.execute_batch(SQLITE.create_table).map_err(db)?;
    let current: Option<i64> = c.query_row(CURRENT_VERSION, [], |r| r.get(0)).map_err(db)?;
    for (version, script) in SQLITE.pending(current)? {
        let failed = |e: rusqlite::Error| StoreError::Migration {
            version,
            source: Arc::new(e),
        };
        c.execute_batch(script).map_err(failed)?;
        c.execute(RECORD_VERSION, [version]).map_err(failed)?;
    }
    Ok(())
}

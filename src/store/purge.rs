//! Deleting expired state in bounded steps, so a purge never holds the database for long.
//!
//! One transaction over millions of expired rows held SQLite's only connection, and with it every
//! rotation and read, for as long as it ran (22 s for 2,000,000 rows in `benches/large_db.rs`).
//! Here every step looks at most at [`BATCH`] rows or keys and is its own write, which the
//! engine commits like any other (on SQLite in the same group commit as the rotations queued
//! with it), so requests interleave with the purge. The deletions that an index finds (expired
//! sessions and refresh tokens) repeat until one deletes fewer than [`BATCH`] rows; the ones that
//! must look at every row (revoked or empty refresh families, expired codes kept as tombstones)
//! walk the table by primary key (SQLite's families by rowid, their creation order), [`BATCH`]
//! keys per step. A purge is therefore not one
//! snapshot: rows that expire while it runs may wait for the next one, which is all it promises.

use std::future::Future;

use super::{sql, StoreError};

/// Most rows one step deletes through an index, or keys of one window (the tokens of the
/// revoked families in a window are deleted with them, however many). A step holds the writer
/// for its duration, and the rotations committed with it wait for it: at 500, a step took about
/// 17 ms on a 2,000,000-row database and the rotations' p99 during a purge was 4.6x the idle
/// one (`benches/large_db.rs`). Once rotations got faster (refresh tokens filed in issue order,
/// full-database p99 about 2 ms) the p99 during the purge of 2,000,000 rows was 4.5x at 100
/// (purge 80 s), 2.0x at 25 (183 s) and 1.5x at 16 (241 s): a slower purge, in the
/// background, for requests that do not notice it. Once the refresh grant rotated first (idle
/// p99 about 1.1 ms), 16 gave 3.2x (178 s) and 8 gave 1.9x (331 s, 2026-12-08).
pub(crate) const BATCH: i64 = 8;

/// A table walked by primary key, [`BATCH`] keys per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// `refresh_families`: the tokens of revoked families, then revoked and empty families.
    Families,
    /// `codes`: expired codes, except tombstones, whose grants are scrubbed.
    Codes,
}

/// One statement run over a window: its text, whether it binds the time as `$3` after the
/// window's bounds `$1` and `$2`, and whether the rows it changes count as deleted.
pub(crate) struct WindowWrite {
    /// The statement.
    pub(crate) sql: &'static str,
    /// Binds the time as `$3`.
    pub(crate) binds_now: bool,
    /// Its changed rows are deleted rows.
    pub(crate) deletes: bool,
}

impl Window {
    /// The statement finding the window's last key (`$1` after, `$2` [`BATCH`]).
    pub(crate) fn select(self) -> &'static str {
        match self {
            Window::Families => sql::FAMILY_WINDOW,
            Window::Codes => sql::CODE_WINDOW,
        }
    }

    /// [`Window::select`] on SQLite, whose families are walked by rowid
    /// ([`sql::FAMILY_WINDOW_SQLITE`]).
    pub(crate) fn select_sqlite(self) -> &'static str {
        match self {
            Window::Families => sql::FAMILY_WINDOW_SQLITE,
            Window::Codes => self.select(),
        }
    }

    /// The statements run over a window, in order.
    pub(crate) fn writes(self) -> &'static [WindowWrite] {
        const FAMILIES: &[WindowWrite] = &families(sql::PURGE_FAMILIES);
        const CODES: &[WindowWrite] = &[
            WindowWrite {
                sql: sql::PURGE_CODES,
                binds_now: true,
                deletes: true,
            },
            WindowWrite {
                sql: sql::SCRUB_CODES,
                binds_now: true,
                deletes: false,
            },
        ];
        match self {
            Window::Families => FAMILIES,
            Window::Codes => CODES,
        }
    }

    /// [`Window::writes`] on SQLite ([`sql::PURGE_FAMILIES_SQLITE`]).
    pub(crate) fn writes_sqlite(self) -> &'static [WindowWrite] {
        const FAMILIES: &[WindowWrite] = &families(sql::PURGE_FAMILIES_SQLITE);
        match self {
            Window::Families => FAMILIES,
            Window::Codes => self.writes(),
        }
    }
}

/// The writes of a window of families: its revoked families' tokens, then the families revoked
/// or left without tokens.
const fn families([tokens, families]: [&'static str; 2]) -> [WindowWrite; 2] {
    [
        WindowWrite {
            sql: tokens,
            binds_now: false,
            deletes: true,
        },
        WindowWrite {
            sql: families,
            binds_now: false,
            deletes: true,
        },
    ]
}

/// One bounded step of a purge.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// One statement of [`sql::PURGE_EXPIRED`], bound to the time and [`BATCH`].
    Expired(&'static str),
    /// The next window of a table after the key `after` (`""` for the first).
    Window {
        /// The table.
        of: Window,
        /// The last key of the previous window.
        after: String,
    },
}

/// What a step did.
#[derive(Debug, Default)]
pub(crate) struct StepDone {
    /// Rows deleted.
    pub(crate) deleted: u64,
    /// For a window: its last key, `None` when the table has no keys after `after`.
    pub(crate) last: Option<String>,
}

/// An engine that runs one step in one write of its own.
pub(crate) trait PurgeStep {
    /// Runs `step` with the time `now`.
    fn purge_step(
        &self,
        step: Step,
        now: i64,
    ) -> impl Future<Output = Result<StepDone, StoreError>> + Send;
}

/// Deletes what expired at `now` in bounded steps; the number of rows deleted.
pub(crate) async fn purge(engine: &impl PurgeStep, now: i64) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for statement in sql::PURGE_EXPIRED {
        loop {
            let done = engine.purge_step(Step::Expired(statement), now).await?;
            deleted += done.deleted;
            if done.deleted < BATCH as u64 {
                break;
            }
        }
    }
    for of in [Window::Families, Window::Codes] {
        let mut after = String::new();
        loop {
            let done = engine.purge_step(Step::Window { of, after }, now).await?;
            deleted += done.deleted;
            match done.last {
                Some(last) => after = last,
                None => break,
            }
        }
    }
    Ok(deleted)
}

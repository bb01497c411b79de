//! The statement helpers of the SQLite engine: each prepares its statement once per connection
//! (`prepare_cached`) and maps rusqlite's errors.

use rusqlite::{Connection, OptionalExtension, Params, Row};

use super::db;
use crate::store::StoreError;

/// Runs a statement that returns no rows; the number of rows changed.
pub(super) fn exec(c: &Connection, sql: &str, params: impl Params) -> Result<usize, StoreError> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map_err(db)
}

/// The first row, decoded by `f`, or `None` when there is none.
pub(super) fn optional<T>(
    c: &Connection,
    sql: &str,
    params: impl Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>, StoreError> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params, f).optional())
        .map_err(db)
}

/// The first row, decoded by `f`; no row is an error.
pub(super) fn one<T>(
    c: &Connection,
    sql: &str,
    params: impl Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    c.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params, f))
        .map_err(db)
}

//! Schema migrations: the embedded scripts of each engine (`migrations/ENGINE/NNNN_*.sql`), the
//! version bookkeeping both engines share, and the runner of the sqlx engine (PostgreSQL; the
//! SQLite engine runs the same steps on rusqlite in `sqlite/mod.rs`).
//!
//! The applied versions are rows of `claimrules_schema (version)`; the schema is at the highest
//! one, and version `n` is the `n`-th script. Every database claimrules ever wrote uses that
//! table, so it stays the record: sqlx's own migrator would keep a different table
//! (`_sqlx_migrations`, with checksums) and would try to run `0001_init.sql` again over every
//! existing database. Scripts are never edited once released; a change is a new script.

use super::StoreError;

/// One engine's migrations.
pub(crate) struct Migrations {
    /// Creates `claimrules_schema` if missing, in the engine's dialect (as every earlier
    /// claimrules created it).
    pub(crate) create_table: &'static str,
    /// The scripts in order; script `i` brings the schema to version `i + 1`.
    pub(crate) scripts: &'static [&'static str],
}

/// The SQLite engine's migrations.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: Migrations = Migrations {
    create_table: "CREATE TABLE IF NOT EXISTS claimrules_schema (version INTEGER NOT NULL)",
    scripts: &[
        include_str!("../../migrations/sqlite/0001_init.sql"),
        include_str!("../../migrations/sqlite/0002_user_metadata.sql"),
        include_str!("../../migrations/sqlite/0003_refresh_tokens_rowid.sql"),
        include_str!("../../migrations/sqlite/0004_refresh_families_rowid.sql"),
    ],
};

/// The PostgreSQL engine's migrations.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: Migrations = Migrations {
    create_table: "CREATE TABLE IF NOT EXISTS claimrules_schema (version BIGINT NOT NULL)",
    scripts: &[
        include_str!("../../migrations/postgres/0001_init.sql"),
        include_str!("../../migrations/postgres/0002_user_metadata.sql"),
    ],
};

/// The schema version of a database (`NULL` when no migration ran yet), in both dialects.
pub(crate) const CURRENT_VERSION: &str = "SELECT MAX(version) FROM claimrules_schema";

/// Records that the version bound as `$1` was applied (SQLite accepts `$1` as well).
pub(crate) const RECORD_VERSION: &str = "INSERT INTO claimrules_schema (version) VALUES ($1)";

impl Migrations {
    /// The newest schema version these migrations know.
    pub(crate) fn latest(&self) -> i64 {
        self.scripts.len() as i64
    }

    /// The migrations still to run over a database at schema version `current` (`None` when
    /// new), as (version, script); a schema newer than [`Migrations::latest`] is refused.
    pub(crate) fn pending(
        &self,
        current: Option<i64>,
    ) -> Result<Vec<(i64, &'static str)>, StoreError> {
        let current = current.unwrap_or(0);
        if current > self.latest() {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported: self.latest(),
            });
        }
        Ok((1..)
            .zip(self.scripts.iter().copied())
            .skip(current.max(0) as usize)
            .collect())
    }
}

/// Brings the schema up to [`Migrations::latest`] on `conn`, a connection of a sqlx engine inside
/// a transaction the caller opened (and holds whatever lock keeps other instances out) and
/// commits. `db` maps the engine's errors.
#[cfg(feature = "postgres")]
pub(crate) async fn run<DB>(
    conn: &mut DB::Connection,
    migrations: &Migrations,
    db: fn(sqlx::Error) -> StoreError,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    sqlx::query(migrations.create_table)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let current: Option<i64> = sqlx::query_scalar(CURRENT_VERSION)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    for (version, script) in migrations.pending(current)? {
        let failed = |e: sqlx::Error| StoreError::Migration {
            version,
            source: std::sync::Arc::new(e),
        };
        sqlx::raw_sql(script)
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
        sqlx::query(RECORD_VERSION)
            .bind(version)
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: Migrations = Migrations {
        create_table: "",
        scripts: &["one", "two"],
    };

    #[test]
    fn pending_counts_from_the_current_version() {
        assert_eq!(TWO.pending(None).unwrap(), vec![(1, "one"), (2, "two")]);
        assert_eq!(TWO.pending(Some(1)).unwrap(), vec![(2, "two")]);
        assert!(TWO.pending(Some(2)).unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        assert!(matches!(
            TWO.pending(Some(3)),
            Err(StoreError::SchemaTooNew {
                found: 3,
                supported: 2
            })
        ));
    }
}

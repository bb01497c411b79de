//! Owner-only files and folders for what the server keeps on disk.
//!
//! The data folder holds the SQLite database (the private signing keys, grants with personal
//! data) and the embedded default's generated secrets. Every folder the server creates for them
//! is made `0700` and every file `0600` *by the call that creates it* (`mkdir`/`open` with that
//! mode), so no other local user can read one even for an instant; SQLite gives its `-wal`,
//! `-shm` and `-journal` files the mode of the database file, which is why the database file is
//! created here, empty, before SQLite opens it. A folder or file that already exists and is
//! accessible by group or others is refused with [`DataDirError::Exposed`], which tells the
//! operator what to run: the server never silently trusts (or silently "fixes") a key that
//! others may already have copied.
//!
//! On platforms without Unix modes these checks do nothing.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Errors of preparing the data folder.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// A folder or file could not be created or inspected.
    #[error("cannot create {}: {message}", path.display())]
    Create {
        /// The folder or file.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// An existing folder or file is accessible by group or others.
    #[error(
        "{} is accessible by group or others (mode {mode:04o}); it holds signing keys or \
         secrets, so claimrules refuses to start: run `chmod {fix:o} {}` (and assume that \
         whoever could read it has the keys: rotate them with `claimrules keys rotate`)",
        path.display(),
        path.display()
    )]
    Exposed {
        /// The folder or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode to set (`0700` for a folder, `0600` for a file).
        fix: u32,
    },
}

/// Permission bits a private folder may have.
pub const FOLDER_MODE: u32 = 0o700;
/// Permission bits a private file may have.
pub const FILE_MODE: u32 = 0o600;

/// The files SQLite keeps next to a database `db`: the database itself, its write-ahead log,
/// its shared-memory index and its rollback journal.
pub fn database_files(db: &Path) -> Vec<PathBuf> {
    let name = db.as_os_str();
    let mut files = vec![db.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut n = name.to_owned();
        n.push(suffix);
        files.push(PathBuf::from(n));
    }
    files
}

/// Creates `path` (and missing parents) with mode `0700`, or checks the existing folder.
pub fn private_folder(path: &Path) -> Result<(), DataDirError> {
    let created = {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(FOLDER_MODE);
        }
        b.create(path)
    };
    created.map_err(|e| DataDirError::Create {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    check_private(path, FOLDER_MODE)
}

/// Opens `path` for writing, creating it with mode `0600`; `Ok(None)` when it already exists
/// (it is then left untouched: check it with [`check_private`]).
pub fn create_private_file(path: &Path) -> io::Result<Option<File>> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    match o.open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

/// Refuses `path` when it exists with permission bits beyond `allowed` for group or others;
/// a missing path is fine.
pub fn check_private(path: &Path, allowed: u32) -> Result<(), DataDirError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(DataDirError::Create {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 & !allowed != 0 {
            return Err(DataDirError::Exposed {
                path: path.to_path_buf(),
                mode,
                fix: allowed,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, allowed);
    Ok(())
}

/// Prepares an SQLite database file before SQLite opens it: its folder is created `0700` when
/// missing, the database file is created empty with mode `0600` when missing, and the database
/// and its `-wal`, `-shm` and `-journal` files, when present, must not be accessible by group or
/// others. (An existing folder is the operator's choice when the database is named by URL, and
/// files that are `0600` stay private in any folder; the data folder itself is checked by
/// [`private_folder`].)
pub fn prepare_database(db: &Path) -> Result<(), DataDirError> {
    if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            private_folder(parent)?;
        }
    }
    create_private_file(db).map_err(|e| DataDirError::Create {
        path: db.to_path_buf(),
        message: e.to_string(),
    })?;
    for f in database_files(db) {
        check_private(&f, FILE_MODE)?;
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_owner_only_and_refuses_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b/data");
        private_folder(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let db = data.join("x.db");
        prepare_database(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = prepare_database(&db).unwrap_err();
        assert!(
            matches!(err, DataDirError::Exposed { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = private_folder(&data).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
        // A stale -wal from an older version is refused too.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(data.join("x.db-wal"), b"").unwrap();
        std::fs::set_permissions(
            data.join("x.db-wal"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(prepare_database(&db).is_err());
    }
}
